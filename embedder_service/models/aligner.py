"""Similarity-transform alignment of a detected face onto an encoder's chip."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

AlignmentMode = Literal["five_point", "eyes_nose"]


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``source`` points onto ``target``.

    Closed form (Umeyama, without reflection), written here because OpenCV's
    ``estimateAffinePartial2D`` is RANSAC/LMedS-only and would drop landmarks as outliers
    instead of fitting all of them; scikit-image would be a large dependency for 15 lines.
    Returns the 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float((singular * sign).sum() / variance) if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


class FaceAligner:
    """Warps faces so that their landmarks land on the encoder's template."""

    def __init__(self, template: np.ndarray, chip_size: int, mode: AlignmentMode = "five_point") -> None:
        self.template = np.asarray(template, dtype=np.float64).reshape(5, 2)
        self.chip_size = chip_size
        self.mode: AlignmentMode = mode
        # Nose and mouth move with pose; the eyes + nose fit ignores the mouth corners.
        self._points = slice(0, 5) if mode == "five_point" else slice(0, 3)

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Returns the chip (chip_size x chip_size x 3, same dtype as ``image``)."""
        matrix = similarity_transform(np.asarray(landmarks)[self._points], self.template[self._points])
        return cv2.warpAffine(
            image,
            matrix,
            (self.chip_size, self.chip_size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
