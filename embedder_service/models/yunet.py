"""YuNet (libfacedetection.train, Apache-2.0): box, score and 5 landmarks in one small pass.

Decoded as OpenCV's ``cv2.FaceDetectorYN`` decodes it (tests/embedder/test_detectors.py checks
the two agree): one anchor per cell of strides 8, 16 and 32; the score is sqrt(cls * obj).
"""

from __future__ import annotations

import numpy as np

from embedder_service.models.single_shot import STRIDES, Candidates, SingleShotDetector, grid


class YunetDetector(SingleShotDetector):
    smallest_face = 10
    nms_iou = 0.3

    def blob(self, canvas: np.ndarray) -> np.ndarray:
        # BGR pixel values as they are: what the net was trained on.
        return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)

    def decode(self, outputs: dict[str, np.ndarray], height: int, width: int, threshold: float) -> Candidates:
        parts = []
        for stride in STRIDES:
            cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
            scores = np.sqrt(cls * obj)
            chosen = np.flatnonzero(scores >= threshold)
            corners = grid(height // stride, width // stride, stride)[chosen]
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[chosen]
            centres = corners + bbox[:, :2] * stride
            sizes = np.exp(bbox[:, 2:]) * stride
            points = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[chosen] * stride + corners[:, None]
            boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
            parts.append(Candidates(boxes, scores[chosen], points))
        return Candidates.concatenate(parts)
