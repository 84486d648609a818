"""Bad input gets a precise 4xx in FastAPI's error shape, and leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import assert_nothing_stored, post_images
from tests.search.fakes import FakeEmbedder, photo


def test_not_an_image_is_the_embedders_415_naming_the_file(client: TestClient) -> None:
    answer = post_images(client, ("notes.txt", b"just some text"))
    assert answer["status"] == 415
    assert answer["detail"] == "notes.txt: cannot identify image file"
    assert_nothing_stored(client)


def test_truncated_image_is_a_400_naming_the_file(client: TestClient) -> None:
    data = photo("ann")
    answer = post_images(client, ("cut.png", data[: len(data) // 2]))
    assert answer["status"] == 400 and answer["detail"].startswith("cut.png: ")
    assert_nothing_stored(client)


def test_query_without_a_face_is_a_422(client: TestClient) -> None:
    response = client.post("/search", files={"image": ("empty.png", photo(), "image/png")})
    assert response.status_code == 422
    assert response.json() == {"detail": "no face found in the query photo 'empty.png'"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/images/12345"), ("get", "/images/12345/file"), ("delete", "/images/12345")],
)
def test_unknown_id_is_a_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"detail": "no image with id 12345"}


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 1001},
        {"k": "many"},
        {"threshold": 1.5},
        {"source": "faces"},
        {"collection": "no spaces please"},
    ],
)
def test_bad_search_parameters_are_422(client: TestClient, params: dict[str, str | int | float]) -> None:
    response = client.post("/search", files={"image": ("q.png", photo("bo"), "image/png")}, params=params)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][-1] == next(iter(params))
    # The same rules hold for form fields.
    response = client.post(
        "/search",
        files={"image": ("q.png", photo("bo"), "image/png")},
        data={k: str(v) for k, v in params.items()},
    )
    assert response.status_code == 422


def test_bad_ingest_parameters_are_422(client: TestClient) -> None:
    one, two = ("a.png", photo("a")), ("b.png", photo("b"))
    assert post_images(client, one, two, external_id="only-one")["status"] == 422
    assert post_images(client, one, metadata="{not json")["status"] == 422
    assert post_images(client, one, metadata="[1, 2]")["status"] == 422
    assert post_images(client, one, collection="bad/name")["status"] == 422
    assert client.post("/images", data={"collection": "x"}).status_code == 422  # no image at all
    assert client.get("/images/not-a-number").status_code == 422
    assert_nothing_stored(client)


@pytest.fixture
def small_limits(make_settings: Callable[..., SearchSettings]) -> Iterator[TestClient]:
    settings = make_settings(
        uploads={"max_image_bytes": 8_000, "max_request_bytes": 20_000, "max_images_per_request": 3}
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_too_many_photos_in_one_request(small_limits: TestClient) -> None:
    answer = post_images(small_limits, *((f"{i}.png", photo("x", size=(8, 8), variant=i)) for i in range(4)))
    assert answer["status"] == 422 and "at most 3 photos" in answer["detail"][0]["msg"]


def test_oversized_body_is_413_before_it_is_read(
    small_limits: TestClient, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.failing = True  # a request that reached the embedder would be a 503
    big = photo("y", size=(96, 96))  # ~27 kB of noise
    answer = post_images(small_limits, ("big.png", big))
    assert answer["status"] == 413 and "20000 bytes" in answer["detail"]
    response = small_limits.post("/search", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413 and "bytes" in response.json()["detail"]
    assert_nothing_stored(small_limits)


def test_oversized_chunked_body_is_413_while_streaming(small_limits: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 1000

    response = small_limits.post(
        "/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "request body exceeds the limit of 20000 bytes for this endpoint"}


def test_one_oversized_photo_is_413_naming_it(small_limits: TestClient, fake_embedder: FakeEmbedder) -> None:
    fake_embedder.failing = True  # refused before the embedder: a request reaching it would be a 503
    answer = post_images(
        small_limits, ("ok.png", photo("z", size=(8, 8))), ("large.png", photo("z", size=(60, 60)))
    )
    assert answer["status"] == 413
    assert answer["detail"] == "large.png: photo exceeds the limit of 8000 bytes"
    assert_nothing_stored(small_limits)
