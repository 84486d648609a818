"""Builds the face pipeline from settings and the model manifest; runs requests through it."""

from __future__ import annotations

import threading

import numpy as np

from embedder_service.imaging import ImageError, decode_image
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detector import MtcnnDetector
from embedder_service.models.encoder import EncoderSpec, FaceEncoder
from embedder_service.models.manifest import Manifest, load_manifest
from embedder_service.models.pipeline import DetectionOptions, FacePipeline
from embedder_service.schemas import FaceOut, FacesResponse, ImageFaces, ModelInfo, ModelsResponse
from embedder_service.settings import EmbedderSettings
from embedder_service.telemetry import FACES_PER_IMAGE, IMAGE_PIXELS


def build_pipeline(settings: EmbedderSettings, manifest: Manifest | None = None) -> FacePipeline:
    """The detect -> align -> embed pipeline the settings describe (also used by eval and bench)."""
    manifest = manifest or load_manifest(settings.models_dir)
    spec = manifest.encoder(settings.encoder)
    threads = settings.intra_op_threads
    return FacePipeline(
        detector=MtcnnDetector(settings.models_dir, settings.providers, threads),
        aligner=FaceAligner(np.array(spec.landmark_template), spec.input_size, settings.alignment),
        encoder=FaceEncoder(spec, settings.models_dir, settings.providers, threads),
        flip_augment=settings.flip_augment,
    )


class EmbedderService:
    """Runs requests through one pipeline; ``manifest`` describes its models for ``GET /models``.

    :meth:`from_models` builds both from ``settings.models_dir``; tests pass their own.
    """

    def __init__(self, settings: EmbedderSettings, pipeline: FacePipeline, manifest: Manifest) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.manifest = manifest
        # One model run at a time: each run already uses every core (docs/decisions/embedder.md).
        self._lock = threading.Lock()

    @classmethod
    def from_models(cls, settings: EmbedderSettings) -> EmbedderService:
        manifest = load_manifest(settings.models_dir)
        return cls(settings, build_pipeline(settings, manifest), manifest)

    @property
    def spec(self) -> EncoderSpec:
        """The encoder's manifest entry: name, dimension, calibrated match threshold."""
        return self.pipeline.encoder.spec

    def detection_options(
        self, min_face_size: int | None = None, threshold: float | None = None, max_faces: int | None = None
    ) -> DetectionOptions:
        """A request's options: what it gives, the settings for what it leaves out."""
        settings = self.settings
        return DetectionOptions(
            min_face_size=settings.min_face_size if min_face_size is None else min_face_size,
            threshold=settings.detection_threshold if threshold is None else threshold,
            max_faces=settings.max_faces if max_faces is None else max_faces,
        )

    def warm_up(self) -> None:
        """Opens every session and runs each net once, so the first request is not slow."""
        blank = np.zeros((160, 160, 3), dtype=np.uint8)
        with self._lock:
            self.pipeline.analyze([blank], self.detection_options())
            size = self.spec.input_size
            self.pipeline.encoder.embed(np.zeros((1, size, size, 3), np.uint8))

    def decode(self, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
        images = []
        for index, (name, data) in enumerate(uploads):
            try:
                images.append(decode_image(data, self.settings.max_image_pixels))
            except ImageError as error:
                raise ImageError(f"image {index} ({name}): {error}", error.status_code) from None
        return images

    def faces(
        self, uploads: list[tuple[str, bytes]], options: DetectionOptions, embeddings: bool, landmarks: bool
    ) -> FacesResponse:
        images = self.decode(uploads)
        with self._lock:
            results = self.pipeline.analyze(images, options, with_embeddings=embeddings)
        out = []
        for image, faces in zip(images, results, strict=True):
            FACES_PER_IMAGE.observe(len(faces))
            IMAGE_PIXELS.observe(image.shape[0] * image.shape[1] / 1e6)
            out.append(
                ImageFaces(
                    width=image.shape[1],
                    height=image.shape[0],
                    faces=[
                        FaceOut(
                            box=[round(float(v), 2) for v in face.detection.box],
                            score=round(float(face.detection.score), 5),
                            landmarks=face.detection.landmarks.round(2).tolist() if landmarks else None,
                            embedding=face.embedding.tolist() if face.embedding is not None else None,
                        )
                        for face in faces
                    ],
                )
            )
        spec = self.spec
        return FacesResponse(
            model=spec.name, dimension=spec.dimension, match_threshold=spec.match_threshold, images=out
        )

    def providers(self) -> list[str]:
        return self.pipeline.encoder.providers_in_use

    def models(self) -> ModelsResponse:
        spec = self.spec
        detector_providers = self.pipeline.detector.providers_in_use
        infos = []
        for record in self.manifest.models:
            is_encoder = record.file == spec.file
            infos.append(
                ModelInfo(
                    name=record.name,
                    task=record.task,
                    file=record.file,
                    version=record.version,
                    checksum=record.sha256,
                    source_package=record.source_package,
                    source_version=record.source_version,
                    dimension=spec.dimension if is_encoder else None,
                    match_threshold=spec.match_threshold if is_encoder else None,
                    providers=self.providers() if is_encoder else detector_providers,
                )
            )
        return ModelsResponse(
            embedding_model=spec.name,
            embedding_dimension=spec.dimension,
            match_threshold=spec.match_threshold,
            alignment=self.settings.alignment,
            flip_augment=self.settings.flip_augment,
            models=infos,
        )
