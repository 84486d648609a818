"""Every request and response body of the public API.

Field names in DESIGN.md's "Public API" are a contract with clients: add fields, never rename.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Box = tuple[float, float, float, float]
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_K = 20
MAX_K = 1000


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, naming the offending file where there is one.")


class InvalidRequestResponse(BaseModel):
    detail: list[dict[str, Any]] | str = Field(
        description="FastAPI's list of parameter errors, or a sentence (e.g. no face in the query photo)."
    )


class Face(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    box: Box = Field(description="x1, y1, x2, y2 in pixels of the upright (EXIF-rotated) photo.")
    score: float = Field(description="Detection confidence.")
    landmarks: list[tuple[float, float]] | None = Field(
        default=None, description="Eyes, nose, mouth corners: [[x, y] x 5]."
    )


class Image(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    collection: str
    external_id: str | None
    sha256: str = Field(description="Digest of the stored bytes: the same photo twice is recognised by it.")
    filename: str | None
    content_type: str
    size_bytes: int
    width: int | None
    height: int | None
    metadata: dict[str, Any]
    created_at: str
    faces: list[Face]


class IngestedImage(Image):
    duplicate: bool = Field(description="True when this photo was already stored in the collection.")


class IngestResponse(BaseModel):
    images: list[IngestedImage] = Field(description="One entry per uploaded photo, in upload order.")


class ImageList(BaseModel):
    images: list[Image]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class Hit(BaseModel):
    score: float = Field(description="Cosine similarity of the two faces' embeddings, -1..1.")
    match: bool = Field(description="Whether `score` reaches the match threshold.")
    source: Literal["image", "video"]
    id: int = Field(description="The image id or video id.")
    face_id: int
    external_id: str | None
    collection: str
    box: Box = Field(description="The matched face's box in its photo (or video frame).")
    time_ranges: list[tuple[float, float]] | None = Field(
        description="Videos: [[start_s, end_s], ...] where this person appears; null for images."
    )


class QueryFace(BaseModel):
    box: Box
    score: float = Field(description="Detection confidence of this face in the query photo.")
    hits: list[Hit] = Field(description="Best first; up to `k`.")


class SearchResponse(BaseModel):
    faces: list[QueryFace] = Field(description="Every face found in the query photo, with its own hits.")
    threshold: float = Field(description="The match threshold applied.")


class SearchParams(BaseModel):
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN)
    source: Literal["images", "videos", "all"] = "all"


class CollectionInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    images: int
    videos: int
    faces: int


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class IndexStatus(BaseModel):
    backend: str
    ok: bool
    faces: int
    details: dict[str, Any]


class EmbedderStatus(BaseModel):
    url: str
    ok: bool
    model: str | None = None
    dimension: int | None = None
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok; degraded: the embedder is unreachable (stored data is still served); "
        "down: the index cannot serve."
    )
    index: IndexStatus
    embedder: EmbedderStatus
