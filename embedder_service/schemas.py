"""Request and response models of the embedder API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the upright image")
    score: float = Field(description="the detector's face score (MTCNN: O-Net face probability)")
    landmarks: list[list[float]] | None = Field(
        default=None, description="5 points [x, y]: left eye, right eye, nose, mouth left, mouth right"
    )
    embedding: list[float] | None = Field(default=None, description="L2-normalised face embedding")


class ImageFaces(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]


MATCH_THRESHOLD = (
    "cosine similarity of two embeddings from which they are the same person, calibrated for this"
    " model and recorded with it in the model manifest"
)
NORMALIZED_THRESHOLD = (
    "the same for the search service's AS-norm scores (a cohort of 1,000 stored faces, K = 100);"
    " null where it was not calibrated"
)


class FacesResponse(BaseModel):
    model: str = Field(description="embedding model that produced the vectors")
    dimension: int
    match_threshold: float = Field(description=MATCH_THRESHOLD)
    normalized_threshold: float | None = Field(default=None, description=NORMALIZED_THRESHOLD)
    images: list[ImageFaces] = Field(description="one entry per uploaded image, in upload order")


class ModelInfo(BaseModel):
    name: str
    task: str
    file: str
    version: str
    checksum: str = Field(description="sha256 of the ONNX file")
    source_package: str
    source_version: str
    licence: str = Field(description="the weights' licence, as their publisher states it")
    dimension: int | None = None
    match_threshold: float | None = Field(default=None, description=f"{MATCH_THRESHOLD} (encoders only)")
    normalized_threshold: float | None = Field(
        default=None, description=f"{NORMALIZED_THRESHOLD} (encoders only)"
    )
    providers: list[str] = Field(description="execution providers the session actually runs on")


class ModelsResponse(BaseModel):
    detector: str = Field(description="the face detector in use (EMBEDDER_DETECTOR)")
    embedding_model: str
    embedding_dimension: int
    match_threshold: float = Field(description=MATCH_THRESHOLD)
    normalized_threshold: float | None = Field(default=None, description=NORMALIZED_THRESHOLD)
    alignment: str
    flip_augment: bool
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    models_loaded: bool
    providers: list[str] = Field(
        description="execution providers every model's session runs on (per model: GET /models)"
    )
