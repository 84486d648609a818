"""Builds the face pipeline from settings and the model manifest; runs requests through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from embedder_service.imaging import ImageError, load_pixels, open_image
from embedder_service.limits import Deadline, ModelLock
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detector import Detection
from embedder_service.models.detectors import build_detector
from embedder_service.models.encoder import EncoderSpec, FaceEncoder
from embedder_service.models.manifest import Manifest, load_manifest
from embedder_service.models.pipeline import DetectionOptions, FacePipeline, faces_of, split_per_image
from embedder_service.models.session import RuntimeOptions, return_free_memory
from embedder_service.schemas import FaceOut, FacesResponse, ImageFaces, ModelInfo, ModelsResponse
from embedder_service.settings import EmbedderSettings
from embedder_service.telemetry import FACES_PER_IMAGE, IMAGE_PIXELS


def build_pipeline(settings: EmbedderSettings, manifest: Manifest | None = None) -> FacePipeline:
    """The detect -> align -> embed pipeline the settings describe (also used by eval and bench)."""
    manifest = manifest or load_manifest(settings.models_dir)
    spec = manifest.encoder(settings.encoder)
    runtime = RuntimeOptions.from_settings(settings)
    return FacePipeline(
        detector=build_detector(settings.detector, settings.models_dir, manifest, runtime),
        aligner=FaceAligner(np.array(spec.landmark_template), spec.input_size, settings.alignment),
        encoder=FaceEncoder(spec, settings.models_dir, runtime, settings.encoder_batch),
        flip_augment=settings.flip_augment,
        detect_max_side=settings.detect_max_side,
    )


class EmbedderService:
    """Runs requests through one pipeline; ``manifest`` describes its models for ``GET /models``.

    :meth:`from_models` builds both from ``settings.models_dir``; tests pass their own.
    """

    def __init__(self, settings: EmbedderSettings, pipeline: FacePipeline, manifest: Manifest) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.manifest = manifest
        # One model run at a time per lane: each run already uses every core. Runs on small
        # inputs take the light lane, so that they never wait behind a large photo's run;
        # each lock is taken per run, not per request (docs/decisions/embedder.md).
        self.light_lane = ModelLock("light")
        self.heavy_lane = ModelLock("heavy")

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
        with self.light_lane.turn():
            self.pipeline.analyze([blank], self.detection_options())
            size = self.spec.input_size
            self.pipeline.encoder.embed(np.zeros((1, size, size, 3), np.uint8))

    def decode(self, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
        """Every image's pixels; the request's declared pixels are added up before any is decoded."""
        opened: list[Image.Image] = []
        for index, (name, data) in enumerate(uploads):
            with _naming(index, name):
                opened.append(open_image(data, self.settings.max_image_pixels))
        total = sum(image.width * image.height for image in opened)
        limit = self.settings.max_request_pixels
        if total > limit:
            raise ImageError(
                f"the {len(opened)} images of this request declare {total} pixels in all;"
                f" the limit per request is {limit}",
                413,
            )
        images = []
        for index, ((name, _), image) in enumerate(zip(uploads, opened, strict=True)):
            with _naming(index, name):
                images.append(load_pixels(image))
        return images

    def faces(
        self,
        uploads: list[tuple[str, bytes]],
        options: DetectionOptions,
        embeddings: bool,
        landmarks: bool,
        deadline: Deadline | None = None,
    ) -> FacesResponse:
        """Decodes and resizes outside the lanes, then takes one once per image's detection and
        once per embedding batch, so other requests' runs interleave with a large request's."""
        images = self.decode(uploads)
        try:
            detections = []
            for index, image in enumerate(images):
                prepared = self.pipeline.detection_input(image, options)
                with self._lane(prepared.work).turn(deadline, f"before detecting faces in image {index}"):
                    detections.append(self.pipeline.detect_input(prepared, options))
            vectors = self._embed(images, detections, deadline) if embeddings else None
        finally:
            if sum(image.shape[0] * image.shape[1] for image in images) > self.settings.detect_max_side**2:
                # More pixels than one full-size detection: its freed tensors would stay in the heap.
                return_free_memory()
        results = faces_of(detections, vectors)
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

    def _embed(
        self, images: list[np.ndarray], detections: list[list[Detection]], deadline: Deadline | None
    ) -> list[np.ndarray]:
        chips = self.pipeline.align(images, detections)
        batch = self.pipeline.encoder.max_batch
        vectors = [np.zeros((0, self.spec.dimension), np.float32)]
        for start in range(0, len(chips), batch):
            part = chips[start : start + batch]
            with self._lane(part.size // 3).turn(deadline, f"before embedding faces {start} and on"):
                vectors.append(self.pipeline.embed_chips(part))
        return split_per_image(np.concatenate(vectors), detections)

    def _lane(self, work: int) -> ModelLock:
        """The lane of a model run on ``work`` input pixels."""
        return self.light_lane if work <= self.settings.light_run_pixels else self.heavy_lane

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
                    licence=record.licence,
                    dimension=spec.dimension if is_encoder else None,
                    match_threshold=spec.match_threshold if is_encoder else None,
                    providers=self.providers() if is_encoder else detector_providers,
                )
            )
        return ModelsResponse(
            detector=self.settings.detector,
            embedding_model=spec.name,
            embedding_dimension=spec.dimension,
            match_threshold=spec.match_threshold,
            alignment=self.settings.alignment,
            flip_augment=self.settings.flip_augment,
            models=infos,
        )


@contextmanager
def _naming(index: int, name: str) -> Iterator[None]:
    """Names the image in the error of whatever fails inside."""
    try:
        yield
    except ImageError as error:
        raise ImageError(f"image {index} ({name}): {error}", error.status_code) from None
