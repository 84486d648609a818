"""Issue 11: MTCNN's false faces on two real photos are gone with the default settings, and come
back at MTCNN's published O-Net cut-off (0.7), which ``EMBEDDER_DETECTION_THRESHOLD`` restores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.embedder.api.test_bounded_work_models import real_client

# (photo, faces it holds): a landscape with a bush MTCNN scores 0.700; a group photo of 8 where
# it adds a hand holding a mug at 0.724.
PHOTOS = [("no_face/compreface_017_0.jpg", 0), ("multi_face/compreface_016_8.jpg", 8)]


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    yield from real_client(models_dir)


@pytest.fixture(scope="module")
def published_client(models_dir: Path) -> Iterator[TestClient]:
    yield from real_client(models_dir, detection_threshold=0.7)


def faces_found(client: TestClient, photo: Path) -> list[float]:
    response = client.post(
        "/faces", params={"embeddings": "false"}, files=[("image", (photo.name, photo.read_bytes()))]
    )
    assert response.status_code == 200, response.text
    return [face["score"] for face in response.json()["images"][0]["faces"]]


@pytest.mark.parametrize(("name", "faces"), PHOTOS)
def test_the_default_finds_only_the_real_faces(
    client: TestClient, shared_data: Path, name: str, faces: int
) -> None:
    assert len(faces_found(client, shared_data / name)) == faces


@pytest.mark.parametrize(("name", "faces"), PHOTOS)
def test_mtcnns_published_cut_off_finds_one_false_face_more(
    published_client: TestClient, shared_data: Path, name: str, faces: int
) -> None:
    scores = faces_found(published_client, shared_data / name)
    assert len(scores) == faces + 1
    assert 0.7 <= min(scores) < 0.73
