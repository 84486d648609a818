"""Builds the face pipeline from settings and the model manifest; runs requests through it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from embedder_service.batching import Cancellation, MicroBatcher
from embedder_service.imaging import ImageError, load_pixels, open_image
from embedder_service.limits import Deadline, DeadlineExceeded, ModelLock
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.base import OnnxModel
from embedder_service.models.detection import split_rows
from embedder_service.models.detector import Detection
from embedder_service.models.detectors import build_detector
from embedder_service.models.encoder import EncoderSpec, FaceEncoder
from embedder_service.models.manifest import Manifest, load_manifest
from embedder_service.models.pipeline import (
    DetectionInput,
    DetectionOptions,
    FacePipeline,
    faces_of,
    split_per_image,
)
from embedder_service.models.session import (
    CUDA,
    RuntimeOptions,
    available_cores,
    common_providers,
    return_free_memory,
)
from embedder_service.schemas import FaceOut, FacesResponse, ImageFaces, ModelInfo, ModelsResponse
from embedder_service.settings import EmbedderSettings
from embedder_service.telemetry import FACES_PER_IMAGE, IMAGE_PIXELS

R = TypeVar("R")
Detecting = tuple[DetectionInput, DetectionOptions]


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

    :meth:`from_models` builds both from ``settings.models_dir``; tests pass their own. Model runs
    go through batchers, so that concurrent requests and the images of one request share them;
    decoding and alignment run on a pool of ``settings.worker_threads``, overlapped with the runs
    (docs/decisions/embedder.md, "Batching"). :meth:`close` stops both.
    """

    def __init__(self, settings: EmbedderSettings, pipeline: FacePipeline, manifest: Manifest) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.manifest = manifest
        # One model run at a time per lane: each run already uses every core. Runs on small
        # inputs take the light lane, so that they never wait behind a large photo's run;
        # each lock is taken per batched run, not per request (docs/decisions/embedder.md).
        self.light_lane = ModelLock("light")
        self.heavy_lane = ModelLock("heavy")
        self._workers_count = settings.worker_threads or available_cores()
        self._workers = ThreadPoolExecutor(self._workers_count, thread_name_prefix="embedder-prepare")
        # A light batch costs no more than one light run; a heavy one no more than detecting a
        # photo of the largest size detection runs on, whose memory issue 10 bounded. Each
        # photo's cost is what the detector answers for it (FaceDetector.work).
        detection_budgets = {
            self.light_lane: settings.light_run_pixels,
            self.heavy_lane: settings.detect_max_side**2,
        }
        self._detectors = {
            lane: MicroBatcher[Detecting, list[Detection]](
                f"detect_{lane.name}",
                self._detect_batch,
                wait_s=_batch_wait(settings, pipeline.detector.providers_in_use),
                max_items=settings.batch_max_images,
                max_cost=budget,
                cost=lambda item: item[0].work,
                lane=lane,
            )
            for lane, budget in detection_budgets.items()
        }
        chips_per_run = pipeline.encoder.max_batch
        light_chips = max(1, settings.light_run_pixels // pipeline.aligner.chip_size**2)
        encoder_budgets = {self.light_lane: min(chips_per_run, light_chips), self.heavy_lane: chips_per_run}
        self._encoders = {
            lane: MicroBatcher[np.ndarray, np.ndarray](
                f"embed_{lane.name}",
                self._embed_batch,
                wait_s=_batch_wait(settings, pipeline.encoder.providers_in_use),
                max_items=chips_per_run,
                max_cost=budget,
                cost=len,
                lane=lane,
            )
            for lane, budget in encoder_budgets.items()
        }

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
        given = {"min_face_size": min_face_size, "threshold": threshold, "max_faces": max_faces}
        overrides: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
        return dataclasses.replace(DetectionOptions.from_settings(self.settings), **overrides)

    def warm_up(self) -> None:
        """Opens every session and runs each net on every shape it will serve (each shape bucket
        when buckets are on), so that no request pays for a first run."""
        with self.light_lane.turn():
            self.pipeline.warm_up()

    def close(self) -> None:
        """Cancels the work still queued and stops the batchers' workers and the pool."""
        batchers: list[MicroBatcher[Any, Any]] = [*self._detectors.values(), *self._encoders.values()]
        for batcher in batchers:
            batcher.close()
        self._workers.shutdown(cancel_futures=True)

    def faces(
        self,
        uploads: list[tuple[str, bytes]],
        options: DetectionOptions,
        embeddings: bool,
        landmarks: bool,
        deadline: Deadline | None = None,
        cancellation: Cancellation | None = None,
    ) -> FacesResponse:
        """Each image is decoded on the pool and detected in a batched run; its faces are
        embedded in batched runs. Whatever of the request is still queued when it fails, or
        when ``cancellation`` is cancelled (its client went away), is dropped."""
        cancellation = cancellation or Cancellation()
        opened, declared = self._open(uploads)
        try:
            images, detections = self._detect(uploads, opened, options, deadline, cancellation)
            vectors = self._embed(images, detections, deadline, cancellation) if embeddings else None
        except BaseException:
            cancellation.cancel()
            raise
        finally:
            if declared > self.settings.detect_max_side**2:
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
            model=spec.name,
            dimension=spec.dimension,
            match_threshold=spec.match_threshold,
            normalized_threshold=spec.normalized_threshold,
            images=out,
        )

    def _open(self, uploads: list[tuple[str, bytes]]) -> tuple[list[Image.Image], int]:
        """Every image, opened but not decoded, and the pixels they declare in all, which are
        checked against the request's limit before any decoding."""
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
        return opened, total

    def _detect(
        self,
        uploads: list[tuple[str, bytes]],
        opened: list[Image.Image],
        options: DetectionOptions,
        deadline: Deadline | None,
        cancellation: Cancellation,
    ) -> tuple[list[np.ndarray], list[list[Detection]]]:
        """Each image's pixels and faces: each image goes to detection once decoded, while the next
        ones decode."""

        def prepare(index: int) -> tuple[np.ndarray, DetectionInput]:
            with _naming(index, uploads[index][0]):
                pixels = load_pixels(opened[index])
            return pixels, self.pipeline.detection_input(pixels, options)

        detecting: list[tuple[Future[list[Detection]], str]] = []
        images = []
        decoded = self._in_order(prepare, range(len(opened)), deadline, "before decoding image", cancellation)
        for index, (pixels, prepared) in enumerate(decoded):
            images.append(pixels)
            stage = f"before detecting faces in image {index}"
            batcher = self._detectors[self._lane(prepared.work)]
            future = batcher.submit((prepared, options), deadline, stage, group=cancellation)
            detecting.append((cancellation.track(future), stage))
        return images, [_outcome(future, deadline, stage) for future, stage in detecting]

    def _in_order(
        self,
        work: Callable[[int], R],
        indices: Sequence[int],
        deadline: Deadline | None,
        stage: str,
        cancellation: Cancellation,
    ) -> Iterator[R]:
        """``work(index)`` of each index, in order: the first in the request's own thread, which
        would only wait for it; meanwhile the next ones on the pool. At most a pool's worth run
        ahead, so that a large request does not fill the pool's queue before a single photo
        that arrives after it."""
        ahead: dict[int, Future[R]] = {}
        for position, index in enumerate(indices):
            for later in indices[position + 1 : position + 1 + self._workers_count]:
                if later not in ahead:
                    ahead[later] = cancellation.track(self._workers.submit(work, later))
            yield work(index) if position == 0 else _outcome(ahead.pop(index), deadline, f"{stage} {index}")

    def _detect_batch(self, items: list[Detecting]) -> list[list[Detection]]:
        return self.pipeline.detect_inputs(
            [prepared for prepared, _ in items], [options for _, options in items]
        )

    def _embed(
        self,
        images: list[np.ndarray],
        detections: list[list[Detection]],
        deadline: Deadline | None,
        cancellation: Cancellation,
    ) -> list[np.ndarray]:
        """Every face's embedding, one array per image: aligned on the pool, embedded in parts of
        at most one run, which the batchers join with other requests' parts."""
        with_faces = [index for index, faces in enumerate(detections) if faces]
        aligned = self._in_order(
            lambda index: self.pipeline.align([images[index]], [detections[index]]),
            with_faces,
            deadline,
            "before aligning the faces of image",
            cancellation,
        )
        chips = np.concatenate([self.pipeline.align([], []), *aligned])
        batch = self.pipeline.encoder.max_batch
        embedding = []
        for start in range(0, len(chips), batch):
            part = chips[start : start + batch]
            stage = f"before embedding faces {start} and on"
            batcher = self._encoders[self._lane(part.size // 3)]
            parted = batcher.submit(part, deadline, stage, group=cancellation)
            embedding.append((cancellation.track(parted), stage))
        vectors = [np.zeros((0, self.spec.dimension), np.float32)]
        vectors.extend(_outcome(future, deadline, stage) for future, stage in embedding)
        return split_per_image(np.concatenate(vectors), detections)

    def _embed_batch(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """The parts' chips embedded in one run, split back into one array per part."""
        vectors = self.pipeline.embed_chips(np.concatenate(parts))
        return split_rows(vectors, [len(part) for part in parts])

    def _lane(self, work: int) -> ModelLock:
        """The lane of a model run on ``work`` input pixels."""
        return self.light_lane if work <= self.settings.light_run_pixels else self.heavy_lane

    def _models_in_use(self) -> list[OnnxModel]:
        """The encoder and the detector's models: those the pipeline runs, not every one built."""
        return [self.pipeline.encoder, *self.pipeline.detector.models]

    def providers(self) -> list[str]:
        """The providers every model in use runs on (/healthz; each session may fall back on its own)."""
        return common_providers([model.providers_in_use for model in self._models_in_use()])

    def models(self) -> ModelsResponse:
        """The models in use, as the manifest records them (matched by file name), each with the
        providers its session runs on; the pipeline's settings."""
        spec = self.spec
        in_use = {model.model_path.name: model for model in self._models_in_use()}
        # Manifest order; a file `make models` built that the pipeline does not run (another
        # detector, the other P-Net) is left out.
        used = [record for record in self.manifest.models if record.file in in_use]
        infos = []
        for record in used:
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
                    normalized_threshold=spec.normalized_threshold if is_encoder else None,
                    providers=in_use[record.file].providers_in_use,
                )
            )
        return ModelsResponse(
            detector=self.settings.detector,
            embedding_model=spec.name,
            embedding_dimension=spec.dimension,
            match_threshold=spec.match_threshold,
            normalized_threshold=spec.normalized_threshold,
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


def _batch_wait(settings: EmbedderSettings, providers: list[str]) -> float:
    """How long a run waits for batch-mates: none on the CPU, where a batched run costs what its
    items cost one by one (each run uses every core), so waiting would only add latency. Items
    that queue while a run goes on still share the next one."""
    return settings.batch_wait_ms / 1000 if CUDA in providers else 0.0


def _outcome(future: Future[R], deadline: Deadline | None, stage: str) -> R:
    """The future's result, waited for until the deadline; then it is cancelled and the request
    gets :class:`DeadlineExceeded` (the run's result, if it started, is not waited for)."""
    if deadline is None:
        return future.result()
    try:
        return future.result(max(0.0, deadline.remaining()))
    except TimeoutError:
        future.cancel()
        raise DeadlineExceeded(deadline.seconds, stage) from None
