"""Pillow on untrusted image bytes, as both services need it: what its parsers raise on malformed
input, and pixels of any colour mode as 8-bit RGB (wide greyscale scaled, not clipped).

The embedder decodes uploads with these; the search service renders thumbnails of the stored
photos with them, so that both judge and show a photo alike.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

# What Pillow's parsers raise on malformed input (beyond OSError, its "truncated" error).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    OverflowError,
    ZeroDivisionError,
    struct.error,
)

# Greyscale modes wider than 8 bits: 16-bit unsigned in either byte order, 32-bit int, 32-bit float.
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
TIFF_SAMPLE_FORMAT = 339  # 1 unsigned integer (TIFF's default), 2 signed, 3 float


class UnsupportedColourModeError(ValueError):
    """Pixels in a colour mode that has no conversion to RGB."""


def unsigned_32_bit(image: Image.Image) -> bool:
    """Whether an image's 32-bit integer samples are unsigned (a TIFF's SampleFormat 1, its default).

    Read it before any transform: their copies keep neither the format nor the TIFF tags."""
    if image.format != "TIFF":
        return False
    tags = getattr(image, "tag_v2", None)
    value = tags.get(TIFF_SAMPLE_FORMAT, 1) if tags is not None else 1
    if isinstance(value, tuple):
        value = value[0] if value else 1
    return int(value) == 1


def to_rgb8(image: Image.Image, unsigned_32: bool = False) -> np.ndarray:
    """H x W x 3 uint8 RGB from any mode (:func:`rgb_image`)."""
    return np.asarray(rgb_image(image, unsigned_32), dtype=np.uint8)


def rgb_image(image: Image.Image, unsigned_32: bool = False) -> Image.Image:
    """An 8-bit RGB image from any mode, scaling wide greyscale by its bit depth or value range.

    ``unsigned_32``: mode "I" holds unsigned samples (see :func:`unsigned_32_bit`), which Pillow
    stores in a signed array, so values over 2**31 appear negative.

    Pillow's own conversion of the wide modes clips every value above 255 to white, which
    washes a 16-bit photo out to near-white; these are scaled here instead. Raises
    UnsupportedColourModeError for a mode Pillow cannot convert.
    """
    if image.mode in HIGH_BIT_DEPTH_MODES:
        grey = _grey_to_uint8(image, unsigned_32)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode == "RGB":
        return image
    # CMYK, palette, 1-bit, grey and alpha modes go through Pillow's colour maths; alpha is
    # dropped (the colour under transparent pixels is kept).
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise UnsupportedColourModeError(f"unsupported colour mode {image.mode}: {error}") from None


def _grey_to_uint8(image: Image.Image, unsigned_32: bool) -> np.ndarray:
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        # 16 bits declared (PNG or TIFF bit depth 16): 0..65535 maps onto 0..255, as viewers show it.
        wide = values.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if image.mode == "I":
        if unsigned_32:
            values = values.view(np.uint32)
        return _scale_integers(values)
    return _scale_floats(values.astype(np.float32))


def _scale_integers(values: np.ndarray) -> np.ndarray:
    """32-bit integers: the value range picks the depth the data was written at (8, 16 or 32 bits)."""
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = int(values.min()), int(values.max())
    wide: np.ndarray = values.astype(np.float64 if high > 65535 or low < 0 else np.float32)
    if low < 0:
        # Signed data below zero: the whole int32 range maps onto 0..255.
        return _scale(wide + 2.0**31, 2.0**32 - 1)
    for top in (255.0, 65535.0, 2.0**31 - 1 if values.dtype.kind == "i" else 2.0**32 - 1):
        if high <= top:
            return _scale(wide, top)
    return _scale(wide, float(high))


def _scale_floats(values: np.ndarray) -> np.ndarray:
    """Floats: 0..1 (normalised), else 0..255, else 0..65535, else 0..max; clipped to that range."""
    finite = values[np.isfinite(values)]
    high = float(finite.max()) if finite.size else 0.0
    top = next((limit for limit in (1.0, 255.0, 65535.0) if high <= limit), high)
    return _scale(np.nan_to_num(values, nan=0.0, posinf=top, neginf=0.0), top)


def _scale(values: np.ndarray, top: float) -> np.ndarray:
    """Maps 0..top linearly onto 0..255, clipping outside it and rounding to nearest."""
    return np.rint(np.clip(values, 0.0, top) * (255.0 / top)).astype(np.uint8)
