"""Decoding untrusted image bytes into RGB arrays, with limits checked before pixels are decoded.

Every way the bytes can fail to decode ends in :class:`ImageError`, whose status the API
answers with: 400 for empty, corrupt or truncated data, 413 for an image over the pixel
limit, 415 for data in no supported image format or colour mode. Pillow parses lazily, so a
broken file can fail in ``Image.open`` (header), in ``load`` (pixels), in the EXIF transpose
or in the colour conversion: each of those steps is guarded.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

log = structlog.get_logger(__name__)

# Pillow's global bomb guard would warn or raise at its own fixed size; the per-call
# ``max_pixels`` limit below replaces it, so a deployment can raise or lower it.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})

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

# Leading bytes of each supported format: data that starts so but that no parser can read is a
# broken image (400), not something other than an image (415).
MAGIC_NUMBERS = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}

T = TypeVar("T")


class ImageError(ValueError):
    """An upload that is not a usable image; ``status_code`` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _guarded(step: str, action: Callable[[], T], claimed: str | None = None) -> T:
    """Runs one Pillow step on untrusted data; whatever it raises becomes an :class:`ImageError`.

    ``claimed`` is the format the data's magic number names, if any.
    """
    try:
        return action()
    except ImageError:
        raise
    except UnidentifiedImageError:  # an OSError: no format recognises the data at all
        if claimed is not None:
            raise ImageError(
                f"corrupt or truncated {claimed} image: its header cannot be read", 400
            ) from None
        raise ImageError("not an image: the data is not in any supported image format", 415) from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large to decode: {error}", 413) from None
    except MemoryError:
        raise ImageError("image too large to decode: out of memory", 413) from None
    except DECODE_ERRORS as error:
        raise ImageError(f"corrupt or truncated image ({step}): {_describe(error)}", 400) from None
    except Exception as error:  # a parser bug on hostile input is still the input's fault
        log.warning("unexpected error decoding an image", step=step, exc_info=True)
        raise ImageError(f"corrupt or truncated image ({step}): {_describe(error)}", 400) from None


def _claimed_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC_NUMBERS.items() if data.startswith(magic)), None)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Returns H x W x 3 uint8 RGB, upright (EXIF orientation applied).

    Pillow reads the header lazily, so the pixel count is checked before any pixel is
    decoded: a decompression bomb costs a header parse, not gigabytes of memory.
    """
    return load_pixels(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parses only the header: a supported format declaring at most ``max_pixels`` pixels.

    No pixel is decoded yet, so a request's images can all be opened, and their declared
    sizes added up, before any of them costs memory.
    """
    if not data:
        raise ImageError("empty upload: no image data", 400)
    claimed = _claimed_format(data)
    image: Image.Image = _guarded("header", lambda: Image.open(io.BytesIO(data)), claimed)
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(
            f"unsupported image format {image.format}; use JPEG, PNG, WebP, BMP, GIF or TIFF", 415
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"corrupt image: it declares a size of {width}x{height} pixels", 400)
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height} pixels, the limit is {max_pixels}", 413
        )
    return image


def load_pixels(image: Image.Image) -> np.ndarray:
    """Decodes an image from :func:`open_image`: H x W x 3 uint8 RGB, upright."""
    _guarded("pixel data", image.load)
    # Read before the transpose, whose copy keeps neither the format nor the TIFF tags.
    unsigned = _guarded("TIFF tags", lambda: image.format == "TIFF" and _tiff_sample_format(image) == 1)
    image = _guarded("EXIF orientation", lambda: ImageOps.exif_transpose(image))
    pixels = _guarded("colour conversion", lambda: to_rgb8(image, unsigned_32=unsigned))
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageError(f"corrupt image: decoded to an array of shape {pixels.shape}", 400)
    return pixels


def to_rgb8(image: Image.Image, unsigned_32: bool = False) -> np.ndarray:
    """H x W x 3 uint8 RGB from any mode, scaling wide greyscale by its bit depth or value range.

    ``unsigned_32``: mode "I" holds unsigned samples (a TIFF's SampleFormat 1), which Pillow
    stores in a signed array, so values over 2**31 appear negative.

    Pillow's own conversion of the wide modes clips every value above 255 to white, which
    washes a 16-bit photo out to near-white; these are scaled here instead.
    """
    if image.mode in HIGH_BIT_DEPTH_MODES:
        grey = _grey_to_uint8(image, unsigned_32)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        # CMYK, palette, 1-bit, grey and alpha modes go through Pillow's colour maths;
        # alpha is dropped (the colour under transparent pixels is kept).
        try:
            image = image.convert("RGB")
        except ValueError as error:
            raise ImageError(f"unsupported colour mode {image.mode}: {error}", 415) from None
    return np.asarray(image, dtype=np.uint8)


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


def _tiff_sample_format(image: Image.Image) -> int:
    tags = getattr(image, "tag_v2", None)
    value = tags.get(TIFF_SAMPLE_FORMAT, 1) if tags is not None else 1
    if isinstance(value, tuple):
        value = value[0] if value else 1
    return int(value)


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
