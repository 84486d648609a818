"""SCRFD-2.5G-KPS (InsightFace; weights licensed for NON-COMMERCIAL research only): box, score
and 5 landmarks in one pass over a fixed 640 x 640 input.

Anchor-based: two anchors per cell of strides 8, 16 and 32, at the cell's corner; the box is
the distances to its four sides, the landmarks offsets, all in units of the stride. Checked
against the reference code of the PyPI sdist the file ships in (tests/embedder/test_detectors.py).
"""

from __future__ import annotations

import numpy as np

from embedder_service.models.single_shot import STRIDES, Candidates, SingleShotDetector, grid

ANCHORS_PER_CELL = 2
LICENCE = "non-commercial research only (InsightFace's licence for its SCRFD weights)"


class ScrfdDetector(SingleShotDetector):
    smallest_face = 10
    nms_iou = 0.4  # InsightFace's own

    def blob(self, canvas: np.ndarray) -> np.ndarray:
        normalised = (canvas.astype(np.float32) - np.float32(127.5)) / np.float32(128)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])

    def decode(self, outputs: dict[str, np.ndarray], height: int, width: int, threshold: float) -> Candidates:
        parts = []
        for stride in STRIDES:
            scores = outputs[f"score_{stride}"].reshape(-1)
            chosen = np.flatnonzero(scores >= threshold)
            anchors = grid(height // stride, width // stride, stride, ANCHORS_PER_CELL)[chosen]
            distances = outputs[f"bbox_{stride}"].reshape(-1, 4)[chosen] * stride
            boxes = np.concatenate([anchors - distances[:, :2], anchors + distances[:, 2:]], axis=1)
            points = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[chosen] * stride + anchors[:, None]
            parts.append(Candidates(boxes, scores[chosen], points))
        return Candidates.concatenate(parts)
