"""Requests the API tests make again and again, each checking that it succeeded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.search.polling import poll_until

ENDED = ("done", "failed", "cancelled")
# The keys of the `keyed` client (conftest.py).
WRITE_KEY = "write-key-0123456789abcdef"
FAMILY_KEY = "family-key-0123456789abcdef"  # read, only the collection "family"


def ingest(client: TestClient, *photos: bytes, **form: str | list[str]) -> list[dict[str, Any]]:
    """POST /images with these photos (named p0.png, p1.png...); the stored images."""
    files = [("image", (f"p{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    response = client.post("/images", files=files, data=form)
    assert response.status_code == 200, response.text
    images: list[dict[str, Any]] = response.json()["images"]
    return images


def post_images(client: TestClient, *named: tuple[str, bytes], **form: str | list[str]) -> dict[str, Any]:
    """POST /images with named photos, whatever the answer: its status and JSON body together."""
    response = client.post(
        "/images", files=[("image", (name, data, "image/png")) for name, data in named], data=form
    )
    return {"status": response.status_code, **response.json()}


def search(client: TestClient, data: bytes, **params: str | int | float) -> dict[str, Any]:
    response = client.post("/search", files={"image": ("q.png", data, "image/png")}, params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_nothing_stored(client: TestClient) -> None:
    assert client.get("/images").json()["images"] == []
    assert client.get("/collections").json()["collections"] == []


def upload_video(client: TestClient, data: bytes, name: str = "clip.mp4", **form: str) -> dict[str, Any]:
    """POST /videos; the accepted upload (``video_id``, ``job_id``, ``duplicate``)."""
    response = client.post("/videos", files={"video": (name, data, "video/mp4")}, data=form)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def wait_for_job(
    get: Callable[[str], httpx.Response],
    job_id: int,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 30,
) -> dict[str, Any]:
    """Poll ``GET /jobs/{job_id}`` (through ``get``, a TestClient's or an httpx client's) until
    ``done`` holds for the job; returns it."""

    def read() -> dict[str, Any]:
        job: dict[str, Any] = get(f"/jobs/{job_id}").json()
        return job

    return poll_until(read, done, what=f"job {job_id}", timeout_s=timeout_s)


def finished(client: TestClient, job_id: int) -> dict[str, Any]:
    """Wait until the job has ended (done, failed or cancelled); returns it."""
    return wait_for_job(client.get, job_id, lambda job: job["state"] in ENDED)
