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
from embedder_service.models.detector import Detection, as_rgb
from embedder_service.models.session import RuntimeOptions

STRIDES = (8, 16, 32)


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


class SingleShotDetector(ABC):
    """A detector of one ONNX pass: the photo, scaled to at most ``max_side`` pixels a side
    (these nets find faces of about 10 to 300 px), sits in the top-left corner of a zero canvas:
    the graph's fixed input size, else the scaled photo padded to a multiple of 32."""

    smallest_face: ClassVar[int]  # the smallest face found, in the pixels the net sees
    nms_iou: ClassVar[float]
    max_side: ClassVar[int] = 640

    def __init__(self, model_path: Path, runtime: RuntimeOptions) -> None:
        self.model = OnnxModel(model_path, runtime)

    @property
    def providers_in_use(self) -> list[str]:
        return self.model.providers_in_use

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
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        fixed = self._fixed_input()
        if fixed is None:
            factor = min(1.0, self.max_side / max(height, width))
        else:
            factor = min(fixed[0] / height, fixed[1] / width)
        seen_w, seen_h = max(1, round(width * factor)), max(1, round(height * factor))
        canvas_h, canvas_w = fixed or (_padded(seen_h), _padded(seen_w))
        canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
        canvas[:seen_h, :seen_w] = (
            rgb
            if (seen_h, seen_w) == (height, width)
            else cv2.resize(
                rgb, (seen_w, seen_h), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            )
        )
        session = self.model.session
        names = [output.name for output in session.get_outputs()]
        outputs = dict(
            zip(names, session.run(names, {session.get_inputs()[0].name: self.blob(canvas)}), strict=True)
        )
        found = self.decode(outputs, canvas_h, canvas_w, threshold)
        keep = self._nms(found, threshold)
        scale = np.array([width / seen_w, height / seen_h])
        boxes = found.boxes[keep].reshape(-1, 2, 2).astype(np.float64) * scale
        landmarks = found.landmarks[keep].astype(np.float64) * scale
        scores = found.scores[keep]
        sides = (boxes[:, 1] - boxes[:, 0]).max(axis=1)
        kept = [i for i in np.argsort(-scores, kind="stable") if sides[i] >= min_face_size][:max_faces]
        return [
            Detection(box=boxes[i].reshape(4), score=float(scores[i]), landmarks=landmarks[i]) for i in kept
        ]

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
