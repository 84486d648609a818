"""Builds the face pipeline from settings and the model manifest; runs requests through it."""

from __future__ import annotations

import threading

import numpy as np

from embedder_service.imaging import ImageError, decode_image
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detector import MtcnnDetector
from embedder_service.models.encoder import FaceEncoder
from embedder_service.models.manifest import Manifest, load_manifest
from embedder_service.models.pipeline import DetectionOptions, FacePipeline
from embedder_service.schemas import FaceOut, ImageFaces, ModelInfo, ModelsResponse
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
    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self.manifest: Manifest = load_manifest(settings.models_dir)
        self.pipeline = build_pipeline(settings, self.manifest)
        # One model run at a time: each run already uses every core, and interleaving two only
        # adds cache thrash (measured by `make bench`).
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Opens every session and runs each net once, so the first request is not slow."""
        blank = np.zeros((160, 160, 3), dtype=np.uint8)
        with self._lock:
            self.pipeline.analyze([blank], DetectionOptions())
            size = self.pipeline.encoder.spec.input_size
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
    ) -> list[ImageFaces]:
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
        return out

    def providers(self) -> list[str]:
        return self.pipeline.encoder.providers_in_use

    def models(self) -> ModelsResponse:
        spec = self.pipeline.encoder.spec
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
                    providers=self.providers() if is_encoder else detector_providers,
                )
            )
        return ModelsResponse(
            embedding_model=spec.name,
            embedding_dimension=spec.dimension,
            alignment=self.settings.alignment,
            flip_augment=self.settings.flip_augment,
            models=infos,
        )
