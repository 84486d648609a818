"""What YuNet and SCRFD share: one network pass over a photo fitted into the net's input,
anchor outputs decoded per stride, NMS, and boxes mapped back to the photo's pixels."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from embedder_service.models.base import OnnxModel
from embedder_service.models.buckets import BatchLadder, ModelShapes
from embedder_service.models.detection import Detection, DetectionOptions, FaceDetector
from embedder_service.models.detector import as_rgb
from embedder_service.models.session import RuntimeOptions

STRIDES = (8, 16, 32)
BATCH = 16  # canvases per run at most, with shape buckets on and a graph that batches


@dataclass(frozen=True)
class _Fitted:
    """A photo in its canvas: the canvas, the photo's (height, width) and its scaled size in the canvas."""

    canvas: np.ndarray
    photo_size: tuple[int, int]
    seen_size: tuple[int, int]


@dataclass(frozen=True)
class Candidates:
    """Decoded outputs of one pass, in the net input's pixels: (N, 4) x1 y1 x2 y2, (N,), (N, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def concatenate(cls, parts: Sequence[Candidates]) -> Candidates:
        return cls(
            np.concatenate([part.boxes for part in parts]).reshape(-1, 4),
            np.concatenate([part.scores for part in parts]).reshape(-1),
            np.concatenate([part.landmarks for part in parts]).reshape(-1, 5, 2),
        )


def grid(rows: int, cols: int, stride: int, per_cell: int = 1) -> np.ndarray:
    """(rows * cols * per_cell, 2) cell corners (x, y) in input pixels, row-major, each repeated
    ``per_cell`` times: the order of the nets' flattened anchor outputs."""
    ys, xs = np.mgrid[:rows, :cols]
    corners = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(corners, per_cell, axis=0)


class SingleShotDetector(FaceDetector, ABC):
    """A detector of one ONNX pass: the photo, scaled to at most ``max_side`` pixels a side
    (these nets find faces of about 10 to 300 px), sits in the top-left corner of a zero canvas:
    the graph's fixed input size, else the scaled photo padded to a multiple of 32. The pipeline
    hands it photos already shrunk to ``max_side``: then only a fixed-size graph resizes again."""

    smallest_face: ClassVar[int]  # the smallest face found, in the pixels the net sees
    nms_iou: ClassVar[float]
    max_side: ClassVar[int] = 640

    def __init__(self, model_path: Path, runtime: RuntimeOptions) -> None:
        self.model = OnnxModel(model_path, runtime)
        self.batches = BatchLadder(BATCH)

    @property
    def models(self) -> list[OnnxModel]:
        return [self.model]

    def work(self, height: int, width: int, min_face_size: int) -> int:
        """The canvas's pixels: one pass over it, whatever the size of the faces."""
        canvas_h, canvas_w = self._canvas_size(*self._seen_size(height, width))
        return canvas_h * canvas_w

    @abstractmethod
    def blob(self, canvas: np.ndarray) -> np.ndarray:
        """The net's (1, 3, H, W) float32 input from an RGB canvas."""

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], height: int, width: int, threshold: float) -> Candidates:
        """Candidates scoring at least ``threshold``, from the outputs on a ``height`` x ``width`` input."""

    def detect(
        self, image: np.ndarray, min_face_size: int, threshold: float, max_faces: int | None = None
    ) -> list[Detection]:
        """Faces at least ``min_face_size`` px on their longer side, highest score first."""
        return self.detect_batch([image], [DetectionOptions(min_face_size, threshold, max_faces)])[0]

    def detect_batch(
        self, images: Sequence[np.ndarray], options: Sequence[DetectionOptions]
    ) -> list[list[Detection]]:
        """:meth:`detect` for several photos, each with its own options. With shape buckets each
        sits in a ``max_side`` square canvas (unless the graph's input is fixed), and a graph with a
        batch dimension runs them together, padded to the ladder's batch sizes."""
        fitted = [self._fit(as_rgb(image)) for image in images]
        blobs = [self.blob(one.canvas) for one in fitted]
        names = [output.name for output in self.model.session.get_outputs()]
        if self.model.runtime.buckets and self._batched():
            outputs = self.batches.run(self.model, np.concatenate(blobs), padded=True)
            rows = [[output[row : row + 1] for output in outputs] for row in range(len(blobs))]
        else:
            rows = [self.model.run(blob) for blob in blobs]
        return [
            self._faces(one, dict(zip(names, row, strict=True)), opts)
            for one, row, opts in zip(fitted, rows, options, strict=True)
        ]

    def shape_buckets(self) -> list[ModelShapes]:
        """The one canvas with buckets on, in each of the ladder's batch sizes if the graph batches."""
        row = (3, *self._canvas_size(self.max_side, self.max_side))
        return [ModelShapes(self.model, self.batches.shapes(row) if self._batched() else ((1, *row),))]

    def _fit(self, rgb: np.ndarray) -> _Fitted:
        """The photo scaled to the net's input, in the top-left corner of its canvas."""
        height, width = rgb.shape[:2]
        seen_h, seen_w = self._seen_size(height, width)
        canvas = np.zeros((*self._canvas_size(seen_h, seen_w), 3), np.uint8)
        canvas[:seen_h, :seen_w] = (
            rgb
            if (seen_h, seen_w) == (height, width)
            else cv2.resize(
                rgb,
                (seen_w, seen_h),
                interpolation=cv2.INTER_AREA if seen_h * seen_w < height * width else cv2.INTER_LINEAR,
            )
        )
        return _Fitted(canvas, (height, width), (seen_h, seen_w))

    def _seen_size(self, height: int, width: int) -> tuple[int, int]:
        """The photo's (height, width) scaled into the net's input: to at most ``max_side`` a side,
        or as large as fits a fixed input."""
        fixed = self._fixed_input()
        if fixed is None:
            factor = min(1.0, self.max_side / max(height, width))
        else:
            factor = min(fixed[0] / height, fixed[1] / width)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def _canvas_size(self, seen_h: int, seen_w: int) -> tuple[int, int]:
        """The graph's fixed size; with buckets the ``max_side`` square; else the photo padded to 32."""
        fixed = self._fixed_input()
        if fixed is not None:
            return fixed
        if self.model.runtime.buckets:
            return self.max_side, self.max_side
        return _padded(seen_h), _padded(seen_w)

    def _faces(
        self, fitted: _Fitted, outputs: dict[str, np.ndarray], options: DetectionOptions
    ) -> list[Detection]:
        canvas_h, canvas_w = fitted.canvas.shape[:2]
        found = self.decode(outputs, canvas_h, canvas_w, options.threshold)
        keep = self._nms(found, options.threshold)
        (height, width), (seen_h, seen_w) = fitted.photo_size, fitted.seen_size
        scale = np.array([width / seen_w, height / seen_h])
        boxes = found.boxes[keep].reshape(-1, 2, 2).astype(np.float64) * scale
        landmarks = found.landmarks[keep].astype(np.float64) * scale
        scores = found.scores[keep]
        sides = (boxes[:, 1] - boxes[:, 0]).max(axis=1)
        kept = [i for i in np.argsort(-scores, kind="stable") if sides[i] >= options.min_face_size]
        return [
            Detection(box=boxes[i].reshape(4), score=float(scores[i]), landmarks=landmarks[i])
            for i in kept[: options.max_faces]
        ]

    def _batched(self) -> bool:
        """Whether the graph's batch dimension is dynamic."""
        return not isinstance(self.model.session.get_inputs()[0].shape[0], int)

    def _fixed_input(self) -> tuple[int, int] | None:
        """(height, width) of a graph with a fixed input size; None for a dynamic one."""
        height, width = self.model.session.get_inputs()[0].shape[2:]
        return (height, width) if isinstance(height, int) and isinstance(width, int) else None

    def _nms(self, found: Candidates, threshold: float) -> list[int]:
        # OpenCV's NMS, as cv2.FaceDetectorYN applies to YuNet: no hand-written loop to maintain.
        if not len(found.scores):
            return []
        xywh = np.concatenate([found.boxes[:, :2], found.boxes[:, 2:] - found.boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), found.scores.tolist(), threshold, self.nms_iou)
        return [int(i) for i in np.asarray(keep).reshape(-1)]


def _padded(side: int) -> int:
    return math.ceil(side / STRIDES[-1]) * STRIDES[-1]
