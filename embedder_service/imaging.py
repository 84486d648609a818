"""Decoding untrusted image bytes into RGB arrays, with limits checked before pixels are decoded."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's global bomb guard would warn or raise at its own fixed size; the per-call
# ``max_pixels`` limit below replaces it, so a deployment can raise or lower it.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})


class ImageError(ValueError):
    """An upload that is not a usable image; ``status_code`` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Returns H x W x 3 uint8 RGB, upright (EXIF orientation applied).

    Pillow reads the header lazily, so the pixel count is checked before any pixel is
    decoded: a decompression bomb costs a header parse, not gigabytes of memory.
    """
    if not data:
        raise ImageError("empty upload: no image data", 400)
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image: the data is not in any supported image format", 415) from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported image format {image.format}; use JPEG, PNG, WebP or BMP", 415)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height} pixels, the limit is {max_pixels}", 413
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"corrupt or truncated image: {error}", 400) from None
    if image.mode != "RGB":
        # CMYK, palette, 16-bit and grayscale images are converted by Pillow's colour maths;
        # alpha is dropped (the colour under transparent pixels is kept).
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)
