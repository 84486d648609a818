"""Decoding untrusted image bytes into RGB arrays, with limits checked before pixels are decoded.

Every way the bytes can fail to decode ends in :class:`ImageError`, whose status the API
answers with: 400 for empty, corrupt or truncated data, 413 for an image over the pixel
limit, 415 for data in no supported image format or colour mode. Pillow parses lazily, so a
broken file can fail in ``Image.open`` (header), in ``load`` (pixels), in the EXIF transpose
or in the colour conversion: each of those steps is guarded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from facesearch_common.imaging import DECODE_ERRORS, UnsupportedColourModeError, to_rgb8, unsigned_32_bit

log = structlog.get_logger(__name__)

# Pillow's global bomb guard would warn or raise at its own fixed size; the per-call
# ``max_pixels`` limit below replaces it, so a deployment can raise or lower it.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})

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
    except UnsupportedColourModeError as error:
        raise ImageError(str(error), 415) from None
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
    unsigned = _guarded("TIFF tags", lambda: unsigned_32_bit(image))
    image = _guarded("EXIF orientation", lambda: ImageOps.exif_transpose(image))
    pixels = _guarded("colour conversion", lambda: to_rgb8(image, unsigned_32=unsigned))
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageError(f"corrupt image: decoded to an array of shape {pixels.shape}", 400)
    return pixels
