"""The whole face pipeline: detect -> align -> embed, batched across faces and images."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detector import REFERENCE_THRESHOLDS, Detection
from embedder_service.models.encoder import FaceEncoder
from embedder_service.telemetry import MODEL_SECONDS


@dataclass(frozen=True)
class DetectionOptions:
    """One request's detection parameters; the service fills them from its settings."""

    min_face_size: int
    threshold: float  # O-Net face probability cut-off
    max_faces: int | None = None  # None: every face found


class FaceDetector(Protocol):
    """What the pipeline needs of a detector: :class:`MtcnnDetector`, or a test's stand-in."""

    @property
    def providers_in_use(self) -> list[str]: ...

    def detect(
        self,
        image: np.ndarray,
        min_face_size: int,
        thresholds: tuple[float, float, float],
        max_faces: int | None = None,
    ) -> list[Detection]: ...


@dataclass
class Face:
    detection: Detection
    embedding: np.ndarray | None


class FacePipeline:
    def __init__(
        self, detector: FaceDetector, aligner: FaceAligner, encoder: FaceEncoder, flip_augment: bool
    ) -> None:
        self.detector = detector
        self.aligner = aligner
        self.encoder = encoder
        self.flip_augment = flip_augment

    def detect(self, image: np.ndarray, options: DetectionOptions) -> list[Detection]:
        started = time.perf_counter()
        # P- and R-Net keep MTCNN's published thresholds; the caller's threshold gates O-Net,
        # whose probability is the score we report.
        detections = self.detector.detect(
            image,
            min_face_size=options.min_face_size,
            thresholds=(REFERENCE_THRESHOLDS[0], REFERENCE_THRESHOLDS[1], options.threshold),
            max_faces=options.max_faces,
        )
        MODEL_SECONDS.labels("mtcnn").observe(time.perf_counter() - started)
        return detections

    def embed(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[np.ndarray]:
        """Embeds every face of every image in one batched model run; one array per image."""
        chips = [
            self.aligner.align(image, face.landmarks)
            for image, faces in zip(images, detections, strict=True)
            for face in faces
        ]
        started = time.perf_counter()
        if chips:
            vectors = self.encoder.embed(np.stack(chips), flip_augment=self.flip_augment)
        else:
            vectors = np.zeros((0, self.encoder.spec.dimension), dtype=np.float32)
        MODEL_SECONDS.labels("encoder").observe(time.perf_counter() - started)
        bounds = np.cumsum([0, *(len(faces) for faces in detections)])
        return [vectors[start:end] for start, end in itertools.pairwise(bounds)]

    def analyze(
        self, images: Sequence[np.ndarray], options: DetectionOptions, with_embeddings: bool = True
    ) -> list[list[Face]]:
        detections = [self.detect(image, options) for image in images]
        if not with_embeddings:
            return [[Face(face, None) for face in faces] for faces in detections]
        vectors = self.embed(images, detections)
        return [
            [Face(face, vector) for face, vector in zip(faces, image_vectors, strict=True)]
            for faces, image_vectors in zip(detections, vectors, strict=True)
        ]
