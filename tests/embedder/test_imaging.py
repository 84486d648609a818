"""Image decoding: formats, orientation, limits and broken input, on small images built here."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embedder_service.imaging import ImageError, decode_image

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), np.full((height, width), 90)], -1
    )
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("RGB", "PNG"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("I;16", "PNG"),
    ],
)
def test_decodes_every_supported_format_and_mode_to_rgb(mode: str, fmt: str) -> None:
    image = gradient().convert(mode)
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.shape == (48, 64, 3)
    assert decoded.dtype == np.uint8
    assert decoded.std() > 5  # real pixels, not a blank fallback


def test_exif_orientation_is_applied() -> None:
    image = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    decoded = decode_image(encode(image, "JPEG", exif=exif), LIMIT)
    assert decoded.shape == (64, 48, 3)


def test_pixel_limit_is_checked_before_decoding() -> None:
    # A 10000x10000 PNG of one colour compresses to a few kB: a decompression bomb in miniature.
    bomb = encode(Image.new("L", (10_000, 10_000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageError) as caught:
        decode_image(bomb, max_pixels=50_000_000)
    assert caught.value.status_code == 413
    assert "10000x10000" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"this is plain text, not a picture", 415, "not an image"),
        (b"%PDF-1.4\n" + b"0" * 100, 415, "not an image"),
    ],
)
def test_rejects_non_images(data: bytes, status: int, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        decode_image(data, LIMIT)
    assert caught.value.status_code == status
    assert words in str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_a_client_error(fmt: str) -> None:
    data = encode(gradient(256, 256), fmt)
    with pytest.raises(ImageError) as caught:
        decode_image(data[: len(data) // 2], LIMIT)
    assert caught.value.status_code == 400
    assert "truncated" in str(caught.value)
