"""GET /images/{id}/thumbnail: the photo scaled to fit, upright, as JPEG, cached by ETag."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search_service.main import create_app
from search_service.settings import AccessSettings, SearchSettings
from tests.search.api.helpers import ingest
from tests.search.fakes import photo

RED, BLUE = (230, 20, 20), (20, 20, 230)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def sideways_jpeg() -> bytes:
    """400 x 200 pixels, red left and blue right, that EXIF says to show turned 90 degrees clockwise
    (orientation 6, as a phone held upright writes it): upright it is 200 x 400, red on top."""
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, :200], pixels[:, 200:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def test_a_thumbnail_fits_max_side_and_keeps_the_aspect(client: TestClient) -> None:
    [image] = ingest(client, photo("ann", size=(640, 480)))
    answer = client.get(f"/images/{image['id']}/thumbnail", params={"max_side": 64})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert decoded(answer.content).size == (64, 48)
    assert answer.headers["cache-control"] == "private, max-age=86400"
    default = client.get(f"/images/{image['id']}/thumbnail")
    assert decoded(default.content).size == (256, 192)


def test_a_small_photo_is_not_enlarged(client: TestClient) -> None:
    [image] = ingest(client, photo("ann"))  # 48 x 48
    answer = client.get(f"/images/{image['id']}/thumbnail", params={"max_side": 512})
    assert decoded(answer.content).size == (48, 48)


def test_a_thumbnail_is_upright_as_exif_says(client: TestClient) -> None:
    [image] = ingest(client, sideways_jpeg())
    thumbnail = decoded(client.get(f"/images/{image['id']}/thumbnail", params={"max_side": 256}).content)
    assert thumbnail.size == (128, 256)
    pixels = np.asarray(thumbnail.convert("RGB"), np.int16)
    assert pixels[32, 64] == pytest.approx(RED, abs=40) and pixels[224, 64] == pytest.approx(BLUE, abs=40)


def test_a_16_bit_grey_photo_is_scaled_to_8_bits_not_clipped_to_white(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((80, 120), 32768, np.uint16)).save(buffer, "PNG")  # mid grey, 16 bits
    [image] = ingest(client, buffer.getvalue())
    thumbnail = decoded(client.get(f"/images/{image['id']}/thumbnail", params={"max_side": 60}).content)
    assert thumbnail.size == (60, 40)
    assert np.abs(np.asarray(thumbnail.convert("RGB"), np.int16) - 128).max() <= 2


def test_the_etag_answers_a_304_per_size(client: TestClient) -> None:
    [image] = ingest(client, photo("ann", size=(300, 200)))
    path = f"/images/{image['id']}/thumbnail"
    first = client.get(path, params={"max_side": 100})
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = client.get(path, params={"max_side": 100}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"] == "private, max-age=86400"
    # Weak comparison, and a list of tags, as browsers send them.
    listed = client.get(path, params={"max_side": 100}, headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    # Another size is another thumbnail, with another tag.
    other = client.get(path, params={"max_side": 200}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    assert decoded(other.content).size == (200, 133)


@pytest.mark.parametrize("max_side", ["31", "1025", "0", "abc", "256.5"])
def test_max_side_out_of_bounds_is_a_422(client: TestClient, max_side: str) -> None:
    [image] = ingest(client, photo("ann"))
    answer = client.get(f"/images/{image['id']}/thumbnail", params={"max_side": max_side})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "max_side"]


def test_a_missing_or_deleted_photo_is_a_404(client: TestClient) -> None:
    assert client.get("/images/999999/thumbnail").json() == {"detail": "no image with id 999999"}
    [image] = ingest(client, photo("ann"))
    assert client.delete(f"/images/{image['id']}").status_code == 204
    assert client.get(f"/images/{image['id']}/thumbnail").status_code == 404


def test_a_stored_file_that_no_longer_decodes_is_a_415(
    client: TestClient, make_settings: Callable[..., SearchSettings]
) -> None:
    [image] = ingest(client, photo("ann"))
    [stored] = [path for path in Path(make_settings().data_dir).rglob(image["sha256"])]
    stored.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # damaged on disk
    answer = client.get(f"/images/{image['id']}/thumbnail")
    assert answer.status_code == 415
    assert answer.json()["detail"].startswith(f"the stored photo {image['id']} (p0.png) does not decode")


def test_openapi_documents_every_answer(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/images/{image_id}/thumbnail"]["get"]
    assert {"200", "304", "401", "403", "404", "415", "422"} <= set(operation["responses"])
    [max_side] = [parameter for parameter in operation["parameters"] if parameter["name"] == "max_side"]
    assert (max_side["schema"]["minimum"], max_side["schema"]["maximum"]) == (32, 1024)


def test_a_key_of_another_collection_gets_a_404(make_settings: Callable[..., SearchSettings]) -> None:
    keys = "write-key-0123456789abcdef:write,family-key-0123456789abcdef:read:family"
    with TestClient(create_app(make_settings(access=AccessSettings(api_keys=keys)))) as keyed:
        write, family = (
            {"X-API-Key": "write-key-0123456789abcdef"},
            {"X-API-Key": "family-key-0123456789abcdef"},
        )
        files = {"image": ("p.png", photo("ann"), "image/png")}
        [image] = keyed.post("/images", files=files, data={"collection": "work"}, headers=write).json()[
            "images"
        ]
        path = f"/images/{image['id']}/thumbnail"
        assert keyed.get(path).status_code == 401
        assert keyed.get(path, headers=family).json() == {"detail": f"no image with id {image['id']}"}
        assert keyed.get(path, headers=write).status_code == 200
