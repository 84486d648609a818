"""Image decoding: formats, orientation, limits and broken input, on small images built here."""

from __future__ import annotations

import io
from pathlib import Path

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


def test_first_200_bytes_of_a_jpeg_are_a_400() -> None:
    # Issue 10: Image.open itself raised OSError("Truncated File Read"), which escaped as a 500.
    with pytest.raises(ImageError) as caught:
        decode_image(encode(gradient(256, 256), "JPEG")[:200], LIMIT)
    assert caught.value.status_code == 400
    assert str(caught.value) == "corrupt or truncated image (header): Truncated File Read"


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"\x89PNG\r\n\x1a\n", 400, "corrupt or truncated PNG image"),
        (b"II*\x00\x08\x00\x00\x00", 400, "corrupt or truncated TIFF image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(30), 400, "corrupt or truncated image (header)"),
        (b"\x89PN", 415, "not an image"),  # too short to be anything
    ],
    ids=["png-signature-only", "tiff-header-only", "webp-no-bitstream", "three-bytes"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_broken_data_behind_an_image_magic_number_is_400(data: bytes, status: int, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        decode_image(data, LIMIT)
    assert caught.value.status_code == status
    assert words in str(caught.value)


# --- high bit depth (issue 10): Pillow's own convert("RGB") clips every value over 255 to white.


def grey_gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """8-bit grey covering 0..255 in both directions."""
    x = np.linspace(0, 255, width)
    y = np.linspace(0, 255, height)
    return np.rint((x[None, :] + y[:, None]) / 2).astype(np.uint8)


def tiff_unsigned_32(grey: np.ndarray) -> bytes:
    """A TIFF of unsigned 32-bit samples over their whole range (Pillow writes "I" as signed)."""
    full = grey.astype(np.uint32) * 0x01010101
    data = bytearray(encode(Image.fromarray(full.view(np.int32)), "TIFF"))
    sample_format = b"\x53\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # tag 339, SHORT, 1 value: 2 (signed)
    at = data.index(sample_format)
    data[at + 8 : at + 10] = b"\x01\x00"  # 1: unsigned
    return bytes(data)


def wide_versions(grey: np.ndarray) -> dict[str, bytes]:
    """The same grey picture at every wide depth, each scaled to its container's range."""
    height, width = grey.shape
    big_endian = (grey.astype(np.uint16) * 257).astype(">u2").tobytes()
    return {
        "png-16-bit": encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "tiff-16-bit-little-endian": encode(Image.fromarray(grey.astype(np.uint16) * 257), "TIFF"),
        "tiff-16-bit-big-endian": encode(Image.frombytes("I;16B", (width, height), big_endian), "TIFF"),
        "tiff-32-bit-signed-full-range": encode(
            Image.fromarray(np.rint(grey * ((2**31 - 1) / 255)).astype(np.int32)), "TIFF"
        ),
        "tiff-32-bit-unsigned-full-range": tiff_unsigned_32(grey),
        "tiff-32-bit-holding-16-bit-values": encode(Image.fromarray(grey.astype(np.int32) * 257), "TIFF"),
        "tiff-32-bit-holding-8-bit-values": encode(Image.fromarray(grey.astype(np.int32)), "TIFF"),
        "tiff-float-0-to-1": encode(Image.fromarray(grey.astype(np.float32) / 255), "TIFF"),
        "tiff-float-0-to-255": encode(Image.fromarray(grey.astype(np.float32)), "TIFF"),
    }


EXPECTED_MODES = {
    "png-16-bit": "I;16",
    "tiff-16-bit-little-endian": "I;16",
    "tiff-16-bit-big-endian": "I;16B",
    "tiff-32-bit-signed-full-range": "I",
    "tiff-32-bit-unsigned-full-range": "I",
    "tiff-32-bit-holding-16-bit-values": "I",
    "tiff-32-bit-holding-8-bit-values": "I",
    "tiff-float-0-to-1": "F",
    "tiff-float-0-to-255": "F",
}


@pytest.mark.parametrize("version", list(EXPECTED_MODES))
def test_high_bit_depth_grey_decodes_to_the_8_bit_picture(version: str) -> None:
    grey = grey_gradient()
    data = wide_versions(grey)[version]
    assert Image.open(io.BytesIO(data)).mode == EXPECTED_MODES[version]
    decoded = decode_image(data, LIMIT)
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    difference = np.abs(decoded[..., 0].astype(int) - grey.astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 1, (version, difference.mean())


def test_float_outside_its_range_is_clipped_not_wrapped() -> None:
    # Values within 0..1 are read as normalised; below 0, +inf and NaN are clipped into that range.
    values = np.array([[-0.5, 0.0, 0.5, 1.0, np.inf, np.nan]], dtype=np.float32)
    decoded = decode_image(encode(Image.fromarray(values), "TIFF"), LIMIT)
    assert decoded[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


def test_16_bit_grey_is_scaled_by_its_depth_not_its_values() -> None:
    # A dark 16-bit picture stays dark: the declared depth, not the brightest pixel, sets the scale.
    dark = np.full((8, 8), 1000, dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(dark), "PNG"), LIMIT)
    assert (decoded == round(1000 / 257)).all()


def test_real_photo_at_16_and_32_bits_decodes_like_the_8_bit_original(shared_data: Path) -> None:
    original = Image.open(shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    grey = np.asarray(original.convert("L"))
    versions = wide_versions(grey)
    for version in ("png-16-bit", "tiff-32-bit-signed-full-range", "tiff-32-bit-unsigned-full-range"):
        decoded = decode_image(versions[version], LIMIT)
        difference = np.abs(decoded.astype(int) - grey[:, :, None].astype(int)).mean()
        assert difference < 2, (version, difference)
        assert abs(decoded.mean() - grey.mean()) < 1  # not washed out (it was 242 of 255)
