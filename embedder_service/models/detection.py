"""What every face detector answers and takes: detections, per-photo options, the detector protocol,
and the split of a shared run's outputs back to its photos.

Apart from the detectors and the pipeline so that both import it, neither the other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embedder_service.models.base import OnnxModel
from embedder_service.models.buckets import ModelShapes
from embedder_service.models.session import common_providers
from embedder_service.settings import EmbedderSettings


@dataclass(eq=False)  # identity equality: a generated == would compare arrays, which raises
class Detection:
    box: np.ndarray  # (4,) x1, y1, x2, y2, float
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye (image left), right eye, nose, mouth left, mouth right


@dataclass(frozen=True)
class DetectionOptions:
    """One request's detection parameters; the service fills them from its settings."""

    min_face_size: int
    threshold: float  # the detector's score cut-off
    max_faces: int | None = None  # None: every face found

    @classmethod
    def from_settings(cls, settings: EmbedderSettings) -> DetectionOptions:
        """The service's defaults (EMBEDDER_MIN_FACE_SIZE, _DETECTION_THRESHOLD, _MAX_FACES)."""
        return cls(settings.min_face_size, settings.detection_threshold, settings.max_faces)


class FaceDetector(Protocol):
    """What the pipeline needs of a detector: any of ``models/detectors.py``, or a test's stand-in.

    ``smallest_face`` is the side, in the pixels it sees, of the smallest face it can find;
    ``max_side`` the longest side it looks at (None: a photo as large as it comes), so that the
    pipeline shrinks a larger photo once, to that size, rather than the detector again.
    """

    @property
    def smallest_face(self) -> int: ...

    @property
    def max_side(self) -> int | None:
        return None

    @property
    def models(self) -> list[OnnxModel]:
        """The ONNX models it runs; by default none (a test's stand-in)."""
        return []

    @property
    def providers_in_use(self) -> list[str]:
        """The providers all its models run on (each session may have fallen back on its own)."""
        return common_providers([model.providers_in_use for model in self.models])

    def work(self, height: int, width: int, min_face_size: int) -> int:
        """Roughly what detecting faces from ``min_face_size`` px in a ``height`` x ``width`` photo
        (at most ``max_side`` long) costs, in input pixels of its model runs: what the service's
        lanes and batches are bounded by."""
        ...

    def detect(
        self, image: np.ndarray, min_face_size: int, threshold: float, max_faces: int | None = None
    ) -> list[Detection]: ...

    def detect_batch(
        self, images: Sequence[np.ndarray], options: Sequence[DetectionOptions]
    ) -> list[list[Detection]]:
        """Each image's faces, as :meth:`detect` finds them with its options, in shared model runs;
        by default (a detector without batched runs, or a test's stand-in) one image at a time."""
        return [
            self.detect(image, opts.min_face_size, opts.threshold, opts.max_faces)
            for image, opts in zip(images, options, strict=True)
        ]

    def shape_buckets(self) -> list[ModelShapes]:
        """Every input shape each of its models runs on when shape buckets are on; by default none."""
        return []


def split_rows(rows: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Consecutive blocks of ``rows``, the i-th ``counts[i]`` rows long: one run's outputs back
    to the items (photos, parts of a batch) whose inputs it concatenated."""
    bounds = np.cumsum([0, *counts])
    return [rows[start:end] for start, end in itertools.pairwise(bounds)]
