"""The photo path end to end: the real embedder (ONNX models), real photos, the search service
and the bulk ingest command as separate processes, including a SIGKILL in the middle of an ingest.

Needs the built models (``make models``) and ../shared/data; skipped without them locally and a
failure under CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from search_service.ingest import main as ingest_main
from tests.conftest import REPO_ROOT
from tests.search.polling import poll_until
from tools.processes import ServiceProcess

pytestmark = pytest.mark.shared_data

PEOPLE = 8
ENROLLED = 3  # photos of each person ingested; the next one is the query


@pytest.fixture(scope="module")
def people(shared_data: Path) -> dict[str, list[Path]]:
    """LFW people with more than ENROLLED photos: their first photos, in name order."""
    chosen: dict[str, list[Path]] = {}
    for folder in sorted((shared_data / "lfw_dev").iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) > ENROLLED:
            chosen[folder.name] = photos[: ENROLLED + 1]
        if len(chosen) == PEOPLE:
            break
    return chosen


@pytest.fixture(scope="module")
def gallery(people: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to the enrolled photos (the shared data is never copied)."""
    root = tmp_path_factory.mktemp("gallery")
    for name, photos in people.items():
        (root / name).mkdir()
        for path in photos[:ENROLLED]:
            (root / name / path.name).symlink_to(path)
    return root


def _post(
    url: str, path: Path | str, data: bytes | None = None, **params: str | int | float
) -> httpx.Response:
    content = Path(path).read_bytes() if data is None else data
    return httpx.post(f"{url}/search", files={"image": (Path(path).name, content)}, params=params, timeout=60)


def _stored(search: ServiceProcess) -> list[dict]:
    return httpx.get(f"{search.url}/images", params={"limit": 1000}).json()["images"]


def test_a_new_photo_finds_the_same_person(
    search: ServiceProcess, gallery: Path, people: dict[str, list[Path]]
) -> None:
    assert ingest_main([str(gallery), "--url", search.url, "--quiet"]) == 0
    assert len(_stored(search)) == PEOPLE * ENROLLED
    correct = 0
    for name, photos in people.items():
        response = _post(search.url, photos[ENROLLED], k=ENROLLED)
        assert response.status_code == 200, response.text
        # LFW photos are centred on their person; others may show in the background.
        face = max(
            response.json()["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])
        )
        top = face["hits"][0]
        correct += top["external_id"].startswith(f"{name}/") and top["match"]
    assert correct >= PEOPLE - 1


def test_a_photo_without_a_face_is_a_422(search: ServiceProcess, shared_data: Path) -> None:
    response = _post(search.url, shared_data / "no_face" / "dlib_dogs.jpg")
    assert response.status_code == 422
    assert "no face" in response.json()["detail"]


def test_every_face_of_a_group_photo_gets_hits(
    search: ServiceProcess, gallery: Path, shared_data: Path
) -> None:
    ingest_main([str(gallery), "--url", search.url, "--quiet"])
    response = _post(search.url, shared_data / "multi_face" / "compreface_000_5.jpg", k=3)
    assert response.status_code == 200
    faces = response.json()["faces"]
    assert len(faces) >= 4
    assert all(len(face["hits"]) == 3 for face in faces)


def test_not_an_image_is_refused_by_name(search: ServiceProcess) -> None:
    response = httpx.post(
        f"{search.url}/images", files={"image": ("notes.txt", b"plain text, not a photo")}, timeout=60
    )
    assert response.status_code in (400, 415)
    assert response.json()["detail"].startswith("notes.txt: ")
    assert _stored(search) == []


def test_sigkill_during_bulk_ingest(search: ServiceProcess, gallery: Path) -> None:
    ingest = subprocess.Popen(
        [
            sys.executable, "-m", "search_service.ingest", str(gallery), "--url", search.url,
            "--batch", "2", "--concurrency", "2", "--retries", "8", "--quiet",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def stored_while_ingesting() -> list[dict]:
        stored = _stored(search)
        assert len(stored) >= 4 or ingest.poll() is None, "ingest finished before the kill"
        return stored

    before = poll_until(
        stored_while_ingesting, lambda stored: len(stored) >= 4, what="4 photos stored", timeout_s=120
    )
    search.kill()
    search.start()
    out, _ = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, out

    after = _stored(search)
    digests = [image["sha256"] for image in after]
    assert len(digests) == len(set(digests)) == PEOPLE * ENROLLED
    assert {image["id"] for image in before} <= {image["id"] for image in after}
    for image in before:
        response = _post(search.url, gallery / image["external_id"], k=1)
        [hit] = response.json()["faces"][0]["hits"]
        assert hit["id"] == image["id"] and hit["score"] > 0.99
