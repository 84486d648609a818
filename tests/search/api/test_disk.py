"""A full disk (issue 10, row 5: a plain-text 500 on upload while /healthz said "ok", and a 500 on
DELETE): uploads are refused with a 507 and a JSON detail before their body is read, /healthz says
degraded with the reason, deletes still work at 0 bytes free, and a restart on a full disk serves
everything acknowledged, with the index agreeing with the store. On a small tmpfs (see small_disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import ingest, search
from tests.search.fakes import photo
from tests.search.small_disk import MiB, fill, free_bytes, small_disk

FLOOR = 16 * MiB
RESERVE = 4 * MiB
KEPT = photo("alice")
# Random pixels, about 1.4 MiB of PNG each: deleting the two makes room to take the reserve back.
DOOMED = [photo("bob", size=(700, 700)), photo("carol", size=(700, 700))]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", 48 * MiB) as mounted:
        yield mounted


@pytest.fixture
def on_disk(disk: Path, make_settings: Callable[..., SearchSettings]) -> Callable[..., SearchSettings]:
    """Settings with the data directory on the small disk; keywords update the disk group."""

    def make(**disk_settings: int) -> SearchSettings:
        limits = {"min_free_bytes": FLOOR, "reserve_bytes": RESERVE, **disk_settings}
        return make_settings(data_dir=disk / "data", disk=limits)

    return make


def post_photo(client: TestClient, data: bytes) -> dict[str, Any]:
    response = client.post("/images", files={"image": ("p.png", data, "image/png")})
    return {"status": response.status_code, **response.json()}


def matches(client: TestClient, query: bytes) -> list[int]:
    """Ids of the stored photos that match the query's face."""
    [face] = search(client, query)["faces"]
    return [hit["id"] for hit in face["hits"] if hit["match"]]


def gauge(client: TestClient, name: str) -> float:
    [value] = [
        line.split()[1] for line in client.get("/metrics").text.splitlines() if line.startswith(f"{name} ")
    ]
    return float(value)


def media_files(data_dir: Path) -> list[Path]:
    """Stored files and staging files alike."""
    return sorted(path for path in (data_dir / "media").rglob("*") if path.is_file())


def test_a_full_disk_refuses_uploads_keeps_deletes_and_survives_a_restart(
    disk: Path, on_disk: Callable[..., SearchSettings]
) -> None:
    settings = on_disk()
    data_dir = settings.data_dir
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["problems"] == []
        assert health["disk"] == {
            "ok": True,
            "free_bytes": health["disk"]["free_bytes"],
            "min_free_bytes": FLOOR,
            "reserve_bytes": RESERVE,
        }
        [kept] = ingest(client, KEPT)
        doomed = ingest(client, *DOOMED)
        files = media_files(data_dir)

        fill(disk, leave=FLOOR - MiB)  # below the floor, with room to spare
        refused = post_photo(client, photo("dave"))
        assert refused["status"] == 507
        assert f"{FLOOR - MiB} bytes free" in refused["detail"]
        assert f"{FLOOR} (16 MiB) must stay free" in refused["detail"]
        video = client.post("/videos", files={"video": ("clip.mp4", b"\0" * 1000, "video/mp4")})
        assert video.status_code == 507 and "SEARCH_MIN_FREE_BYTES" in video.json()["detail"]
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["problems"] == ["disk: 15 MiB free, floor 16 MiB"]
        assert health.json()["disk"]["ok"] is False
        assert health.json()["disk"]["free_bytes"] == FLOOR - MiB
        assert matches(client, photo("alice", variant=1)) == [kept["id"]]
        assert gauge(client, "facesearch_disk_free_bytes") == FLOOR - MiB

        fill(disk)  # nothing left at all
        assert free_bytes(disk) == 0
        assert post_photo(client, photo("dave"))["status"] == 507
        # A query photo streams to a staging file too: there is no room for one.
        query = client.post("/search", files={"image": ("q.png", photo("alice", variant=1), "image/png")})
        assert query.status_code == 507 and query.json()["detail"].startswith("the disk is full")
        for image in doomed:
            assert client.delete(f"/images/{image['id']}").status_code == 204
            assert client.get(f"/images/{image['id']}").status_code == 404
        assert media_files(data_dir) == [path for path in files if path.name == kept["sha256"]]
        # The deleted photos made room: the reserve is held again.
        assert client.get("/healthz").json()["disk"]["reserve_bytes"] == RESERVE

    filler = fill(disk)  # restart on a full disk: opening spends the reserve
    with TestClient(create_app(settings)) as client:
        assert [image["id"] for image in client.get("/images").json()["images"]] == [kept["id"]]
        assert client.get(f"/images/{kept['id']}/file").content == KEPT
        assert client.get("/healthz").json()["status"] == "degraded"
        filler.unlink()
        assert matches(client, photo("alice", variant=1)) == [kept["id"]]
        assert matches(client, photo("bob", variant=1)) == []  # the index forgot the deleted ones
        # No poller takes the reserve back (health only reports it): the next delete does.
        assert client.delete(f"/images/{kept['id']}").status_code == 204
        assert client.get("/healthz").json()["disk"]["reserve_bytes"] == RESERVE


def test_a_disk_that_fills_up_during_an_upload_is_a_507_and_leaves_nothing(
    disk: Path, on_disk: Callable[..., SearchSettings]
) -> None:
    # No floor: only the disk itself can refuse.
    settings = on_disk(min_free_bytes=0)
    with TestClient(create_app(settings)) as client:
        [kept] = ingest(client, KEPT)
        fill(disk, leave=MiB)
        video = post_streamed(client, "/videos", "video", b"\1" * (2 * MiB))  # more than is free
        assert video.status_code == 507
        assert video.json()["detail"].startswith("the disk is full: the upload was not stored")
        photos = post_streamed(client, "/images", "image", DOOMED[0])  # 1.4 MiB
        assert photos.status_code == 507 and photos.json()["detail"].startswith("the disk is full")

        assert [image["id"] for image in client.get("/images").json()["images"]] == [kept["id"]]
        assert client.get("/videos").json()["videos"] == []
        assert [path.name for path in media_files(settings.data_dir)] == [kept["sha256"]]


def post_streamed(client: TestClient, path: str, field: str, data: bytes) -> httpx.Response:
    """A one-file form streamed in chunks without a Content-Length: the guard cannot see the size
    coming, so only the disk itself can refuse it."""
    body = (
        f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="upload"\r\n\r\n'.encode()
        + data
        + b"\r\n--b--\r\n"
    )
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    return client.post(
        path, content=iter(chunks), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )


def test_uploads_are_documented_to_answer_507(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "507" in paths["/images"]["post"]["responses"]
    assert "507" in paths["/videos"]["post"]["responses"]


def test_without_a_reserve_a_delete_on_a_full_disk_is_a_507_that_changes_nothing(
    disk: Path, on_disk: Callable[..., SearchSettings]
) -> None:
    with TestClient(create_app(on_disk(reserve_bytes=0))) as client:
        [image] = ingest(client, DOOMED[0])
        filler = fill(disk)
        response = client.delete(f"/images/{image['id']}")
        assert response.status_code == 507
        assert response.json()["detail"].startswith("the disk is full")
        assert client.get(f"/images/{image['id']}/file").content == DOOMED[0]
        filler.unlink()  # room for the query photo's staging file
        assert matches(client, photo("bob", variant=1)) == [image["id"]]  # still in the index
