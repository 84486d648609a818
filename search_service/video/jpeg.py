"""JPEG encoding of RGB pixels: video frames sent to the embedder, and face thumbnails."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(image_rgb: np.ndarray, quality: int, max_side: int | None = None) -> bytes:
    """``image_rgb`` as JPEG bytes, first shrunk (area-averaged) to ``max_side`` when larger."""
    height, width = image_rgb.shape[:2]
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buffer.tobytes())
