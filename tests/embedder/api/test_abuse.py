"""POST /faces under abuse (issue 10): broken, hostile and oversized image bytes are a 4xx, never a 5xx.

The inputs are generated here: truncations of every supported format at many lengths, random
bytes behind each format's magic number, headers that declare sizes around and far over the
pixel limit, empty and one-pixel images. Each goes through the HTTP API of the unit-tier app
(the stand-in detector), so the whole path from upload to answer is exercised.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.embedder.api.conftest import AppFactory, photo

PIXEL_LIMIT = 1_000_000  # EMBEDDER_MAX_IMAGE_PIXELS for the fuzz client
FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"]
MAGIC_NUMBERS = {
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF89a",
    "WEBP": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "TIFF-le": b"II*\x00",
    "TIFF-be": b"MM\x00*",
    "BMP": b"BM",
}


def post(client: TestClient, name: str, data: bytes) -> Any:
    return client.post("/faces", files=[("image", (name, data, "application/octet-stream"))])


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a few bytes of pixel data: a bomb's shape."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG with the dimensions in its start-of-frame marker rewritten."""
    data = bytearray(photo(64, 48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def fuzz_inputs() -> list[tuple[str, bytes]]:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cases: list[tuple[str, bytes]] = [("empty", b"")]
    for fmt in FORMATS:
        whole = encode(noise, fmt)
        for length in sorted({1, 2, 4, 8, 12, 16, 24, 32, 50, 100, 200, len(whole) // 2, len(whole) - 1}):
            cases.append((f"{fmt.lower()}-first-{length}-bytes", whole[:length]))
    rng = np.random.default_rng(7)
    for name, magic in MAGIC_NUMBERS.items():
        for size in (0, 10, 300, 3000):
            cases.append((f"{name.lower()}-magic-then-{size}-random-bytes", magic + rng.bytes(size)))
    for name, data in [
        ("png-declaring-0x0", png_declaring(0, 0)),
        ("png-declaring-1000x1000-at-the-limit", png_declaring(1000, 1000)),
        ("png-declaring-1000x1001-over-the-limit", png_declaring(1000, 1001)),
        ("png-declaring-30000x30000", png_declaring(30_000, 30_000)),
        ("png-declaring-2^31x2^31", png_declaring(2**31 - 1, 2**31 - 1)),
        ("gif-declaring-0x0", gif_declaring(0, 0)),
        ("gif-declaring-999x1000", gif_declaring(999, 1000)),
        ("gif-declaring-65535x65535", gif_declaring(65535, 65535)),
        ("jpeg-declaring-1000x1000", jpeg_declaring(1000, 1000)),
        ("jpeg-declaring-65500x65500", jpeg_declaring(65500, 65500)),
        ("jpeg-declaring-0x0", jpeg_declaring(0, 0)),
    ]:
        cases.append((name, data))
    for fmt in FORMATS:
        cases.append((f"{fmt.lower()}-1x1", encode(Image.new("RGB", (1, 1), (200, 10, 10)), fmt)))
    cases.append(("png-1x100000", encode(Image.new("L", (1, 100_000), 9), "PNG")))
    cases.append(("random-bytes", rng.bytes(5000)))
    cases.append(("text", b"GIF? no, just text"))
    return cases


FUZZ = fuzz_inputs()


# Pillow reports some of these inputs with a UserWarning before it raises; the warning is noise here.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning", "ignore:Truncated File Read:UserWarning")
@pytest.mark.parametrize(("name", "data"), FUZZ, ids=[name for name, _ in FUZZ])
def test_no_input_is_a_server_error(make_client: AppFactory, name: str, data: bytes) -> None:
    client = make_client(max_image_pixels=PIXEL_LIMIT)
    response = post(client, name, data)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code != 200:
        assert response.status_code in {400, 413, 415}, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.startswith(f"image 0 ({name}): ")


def test_first_200_bytes_of_a_jpeg_are_400_not_500(client: TestClient) -> None:
    """Issue 10, row 1, on a generated JPEG: it was a 500 (OSError 'Truncated File Read' from Image.open)."""
    data = photo()[:200]
    response = post(client, "truncated.jpg", data)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "image 0 (truncated.jpg): corrupt or truncated image (header): Truncated File Read"
    }


def test_first_200_bytes_of_a_real_photo_are_400_not_500(client: TestClient, shared_data: Path) -> None:
    """Issue 10, row 1, exactly as reported: the first 200 bytes of a real JPEG photo."""
    data = (shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()[:200]
    response = post(client, "Aaron_Peirsol_0001.jpg", data)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "image 0 (Aaron_Peirsol_0001.jpg): corrupt or truncated image (header): Truncated File Read"
    }


def test_png_declaring_30000x30000_is_413_at_the_default_limit(client: TestClient) -> None:
    response = post(client, "bomb.png", png_declaring(30_000, 30_000))
    assert response.status_code == 413
    assert response.json() == {
        "detail": "image 0 (bomb.png): image too large: 30000x30000 = 900000000 pixels, the limit is 40000000"
    }


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize(
    ("name", "data", "detail"),
    [
        ("short.tif", encode(Image.new("RGB", (8, 8)), "TIFF")[:12], "corrupt or truncated TIFF image"),
        ("magic.webp", MAGIC_NUMBERS["WEBP"] + b"\x00" * 40, "corrupt or truncated image (header)"),
        ("half.png", encode(Image.new("RGB", (256, 256), 7), "PNG")[:60], "image (pixel data)"),
        ("zero.gif", gif_declaring(0, 0), "corrupt or truncated GIF image"),
        ("noise.bin", b"\x00\x01\x02" * 50, "not an image"),
    ],
    ids=["tiff-12-bytes", "webp-magic-only", "png-60-bytes", "gif-0x0", "no-magic"],
)
def test_broken_images_are_named_in_the_answer(
    client: TestClient, name: str, data: bytes, detail: str
) -> None:
    response = post(client, name, data)
    assert response.status_code == (415 if name == "noise.bin" else 400)
    body = response.json()
    assert body["detail"].startswith(f"image 0 ({name}): ") and detail in body["detail"]
