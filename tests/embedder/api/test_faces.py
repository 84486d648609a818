"""POST /faces over HTTP: uploads, answers, options and their defaults, refusals."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.embedder.api.conftest import DIMENSION, FACE_ROW_WIDTH, MATCH_THRESHOLD, AppFactory, photo


def post(client: TestClient, *images: tuple[str, bytes], field: str = "image", **params: Any) -> Any:
    files = [(field, (name, data, "application/octet-stream")) for name, data in images]
    return client.post("/faces", files=files, params=params)


def scores(response: Any) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [[face["score"] for face in image["faces"]] for image in response.json()["images"]]


def test_answer_names_the_model_its_dimension_and_match_threshold(client: TestClient) -> None:
    body = post(client, ("a.jpg", photo())).json()
    assert body["model"] == "tiny_v1"
    assert body["dimension"] == DIMENSION
    assert body["match_threshold"] == MATCH_THRESHOLD
    (image,) = body["images"]
    assert (image["width"], image["height"]) == (FACE_ROW_WIDTH, 64)
    assert len(image["faces"]) == 2
    for face in image["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= FACE_ROW_WIDTH and 0 <= y1 < y2 <= 64
        assert len(face["landmarks"]) == 5 and all(len(point) == 2 for point in face["landmarks"])
        assert len(face["embedding"]) == DIMENSION
        assert np.linalg.norm(face["embedding"]) == pytest.approx(1, abs=1e-5)


def test_several_images_answer_one_entry_each_in_upload_order(client: TestClient) -> None:
    wide, small, narrow = photo(seed=1), photo(20, 20, "PNG"), photo(48, 48, "WEBP")
    response = post(
        client, ("wide.jpg", wide), ("small.png", small), ("narrow.webp", narrow), ("again.jpg", wide)
    )
    images = response.json()["images"]
    sizes = [(image["width"], image["height"]) for image in images]
    assert sizes == [(FACE_ROW_WIDTH, 64), (20, 20), (48, 48), (FACE_ROW_WIDTH, 64)]
    assert scores(response) == [[0.95, 0.85], [], [], [0.95, 0.85]]
    # The same photo embeds the same wherever it comes in the batch.
    np.testing.assert_allclose(
        [face["embedding"] for face in images[0]["faces"]],
        [face["embedding"] for face in images[3]["faces"]],
        atol=1e-6,
    )


def test_different_faces_embed_differently(client: TestClient) -> None:
    (first,), (second,) = (post(client, ("a.jpg", photo(seed=seed))).json()["images"] for seed in (1, 2))
    assert first["faces"][0]["embedding"] != second["faces"][0]["embedding"]


def test_images_come_in_the_repeated_image_field(client: TestClient) -> None:
    response = post(client, ("a.jpg", photo()), field="file")
    assert response.status_code == 422
    assert any(error["loc"] == ["body", "image"] for error in response.json()["detail"])
    assert client.post("/faces").status_code == 422  # no image at all


def test_options_default_to_the_settings(client: TestClient) -> None:
    # The service's defaults: faces from 20 px up, O-Net probability over 0.8.
    assert scores(post(client, ("a.jpg", photo()))) == [[0.95, 0.85]]


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"EMBEDDER_MIN_FACE_SIZE": "12"}, [0.99, 0.95, 0.85]),
        ({"EMBEDDER_DETECTION_THRESHOLD": "0.9"}, [0.95]),
        ({"EMBEDDER_DETECTION_THRESHOLD": "0.5"}, [0.95, 0.85, 0.6]),
        ({"EMBEDDER_MAX_FACES": "1"}, [0.95]),
    ],
)
def test_settings_from_the_environment_reach_the_detector(
    make_client: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    expected: list[float],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert scores(post(make_client(), ("a.jpg", photo()))) == [expected]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"min_face_size": 30}, [0.95]),
        ({"min_face_size": 12, "threshold": 0.5}, [0.99, 0.95, 0.85]),  # at most 3: the setting
        ({"min_face_size": 12, "threshold": 0.5, "max_faces": 4}, [0.99, 0.95, 0.85, 0.6]),
        ({"threshold": 0.96}, [0.99]),
        ({"max_faces": 1}, [0.99]),
    ],
)
def test_query_parameters_override_the_settings(
    make_client: AppFactory, params: dict[str, Any], expected: list[float]
) -> None:
    client = make_client(min_face_size=16, detection_threshold=0.9, max_faces=3)
    assert scores(post(client, ("a.jpg", photo()))) == [[0.99, 0.95]]
    assert scores(post(client, ("a.jpg", photo()), **params)) == [expected]


def test_embeddings_and_landmarks_can_be_left_out(client: TestClient) -> None:
    (image,) = post(client, ("a.jpg", photo()), embeddings=False, landmarks=False).json()["images"]
    assert len(image["faces"]) == 2
    assert all(face["embedding"] is None and face["landmarks"] is None for face in image["faces"])


@pytest.mark.parametrize(
    "params",
    [{"threshold": 1.5}, {"threshold": 0}, {"min_face_size": 0}, {"max_faces": 0}, {"embeddings": "maybe"}],
)
def test_bad_parameters_are_422(client: TestClient, params: dict[str, Any]) -> None:
    assert post(client, ("a.jpg", photo()), **params).status_code == 422


def truncated_jpeg() -> bytes:
    data = photo()
    return data[: len(data) // 2]


def huge_flat_png() -> bytes:
    """12 megapixels of one grey: a small file that would decode into 12 MB."""
    buffer = io.BytesIO()
    Image.new("L", (4000, 3000), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (truncated_jpeg(), 400, "truncated"),
        (b"definitely not an image", 415, "not an image"),
        (huge_flat_png(), 413, "too large"),  # over the 10 megapixels set below
    ],
    ids=["empty", "truncated-jpeg", "not-an-image", "too-many-pixels"],
)
def test_bad_images_are_refused_with_a_clear_4xx(
    make_client: AppFactory, data: bytes, status: int, words: str
) -> None:
    client = make_client(max_image_pixels=10_000_000)
    response = post(client, ("good.jpg", photo()), ("bad.bin", data))
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and "image 1 (bad.bin)" in detail


def test_too_many_images_are_413(make_client: AppFactory) -> None:
    client = make_client(max_images_per_request=2)
    assert post(client, *[("a.jpg", photo())] * 2).status_code == 200
    response = post(client, *[("a.jpg", photo())] * 3)
    assert response.status_code == 413
    assert "the limit is 2" in response.json()["detail"]


def test_too_large_an_upload_is_413(make_client: AppFactory) -> None:
    client = make_client(max_upload_bytes=20_000)
    small, large = photo(), photo(200, 200, "PNG")
    assert len(small) < 20_000 < len(large)
    assert post(client, ("small.jpg", small)).status_code == 200
    response = post(client, ("small.jpg", small), ("large.png", large))
    assert response.status_code == 413
    assert "image 1 (large.png) is over the 20000-byte limit" in response.json()["detail"]
    # A body far over what any request may carry is refused as it streams in.
    response = post(client, *[("large.png", large)] * 64)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
