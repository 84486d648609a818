"""Uploads that are no video, and bodies that are no well-formed multipart form (issue 10, "hold
under abuse"): each is refused with its status and a JSON detail, and leaves the store as it was:
the photo and the video stored before are still listed and found, no row or job is added, and no
file is left under the media folder.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search_service.services import videos as videos_service
from search_service.settings import SearchSettings
from search_service.video import VideoInfo
from tests.search.api.helpers import finished, ingest, search, upload_video
from tests.search.fakes import MARKERS, photo
from tests.search.video.conftest import CLIP_FPS, PHOTO_SIDE, Placement, write_clip

SQUARES = {name: np.full((PHOTO_SIDE, PHOTO_SIDE, 3), colour, np.uint8) for name, colour in MARKERS.items()}
MULTIPART = "multipart/form-data; boundary=b"


def alice(number: int) -> list[Placement]:
    return [("alice", 20, 60)] if number < CLIP_FPS else []


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two seconds: Alice for the first, nobody for the second."""
    return write_clip(tmp_path_factory.mktemp("clips") / "alice.mp4", SQUARES, alice, 2.0).read_bytes()


@pytest.fixture(scope="module")
def blank_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Half a second of nobody."""
    return write_clip(tmp_path_factory.mktemp("clips") / "blank.mp4", SQUARES, lambda _: [], 0.5).read_bytes()


@dataclass(frozen=True)
class Store:
    """What the client can see of the store, and the files under the media folder."""

    videos: list[dict[str, Any]]
    images: list[dict[str, Any]]
    collections: list[dict[str, Any]]
    files: list[Path]


def snapshot(client: TestClient, data_dir: Path) -> Store:
    return Store(
        videos=client.get("/videos").json()["videos"],
        images=client.get("/images").json()["images"],
        collections=client.get("/collections").json()["collections"],
        files=sorted(path for path in (data_dir / "media").rglob("*") if path.is_file()),
    )


@pytest.fixture
def data_dir(make_settings: Callable[..., SearchSettings]) -> Path:
    return make_settings().data_dir


@pytest.fixture
def stored(client: TestClient, clip: bytes, data_dir: Path) -> Store:
    """A photo of Bob and a video of Alice, analysed: what every test here must leave as it was."""
    ingest(client, photo("bob"), collection="people")
    accepted = upload_video(client, clip, name="alice.mp4", collection="people")
    assert finished(client, accepted["job_id"])["state"] == "done"
    before = snapshot(client, data_dir)
    assert len(before.videos) == len(before.images) == 1
    assert before.videos[0]["id"] == accepted["video_id"] and before.videos[0]["state"] == "done"
    assert len(before.files) == 2 + len(before.videos[0]["people"])  # photo, video, thumbnails
    return before


def assert_store_intact(client: TestClient, data_dir: Path, before: Store) -> None:
    assert snapshot(client, data_dir) == before  # same rows, same files: nothing staged is left
    faces = search(client, photo("alice", variant=1), collection="people")["faces"]
    [hit] = [hit for hit in faces[0]["hits"] if hit["match"]]
    assert (hit["source"], hit["id"]) == ("video", before.videos[0]["id"])
    faces = search(client, photo("bob", variant=1), collection="people")["faces"]
    assert [hit["source"] for hit in faces[0]["hits"] if hit["match"]] == ["image"]


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 8000)
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


UNREADABLE = "not a readable media file: Invalid data found when processing input"
# name, bytes (clip: the test's real clip, cut to a third), the decoder's reason
NOT_VIDEOS: list[tuple[str, bytes | None, str]] = [
    ("notes.txt", b"just some text, certainly not a video\n" * 20, UNREADABLE),
    ("noise.mp4", np.random.default_rng(0).bytes(5000), UNREADABLE),
    ("photo.jpg", _jpeg(), "a still image (jpeg_pipe), not a video"),
    ("empty.mp4", b"", "the file is empty"),
    ("cut.mp4", None, UNREADABLE),
    ("voice.wav", _wav(), "no video stream (the file has audio streams)"),
]


@pytest.mark.parametrize(("name", "data", "reason"), NOT_VIDEOS, ids=[case[0] for case in NOT_VIDEOS])
def test_a_file_that_is_no_video_is_415_and_nothing_is_kept(
    client: TestClient,
    stored: Store,
    data_dir: Path,
    clip: bytes,
    blank_clip: bytes,
    name: str,
    data: bytes | None,
    reason: str,
) -> None:
    body = clip[: len(clip) // 3] if data is None else data
    # Into a collection of its own, which would appear in /collections had a row been written.
    response = client.post(
        "/videos", files={"video": (name, body, "video/mp4")}, data={"collection": "abuse"}
    )
    assert response.status_code == 415
    assert response.json() == {"detail": f"{name}: not a decodable video: {reason}"}
    assert_store_intact(client, data_dir, stored)
    # No row and no job was written, not even one rolled back: the next upload takes the next ids.
    accepted = upload_video(client, blank_clip, name="blank.mp4")
    assert accepted["video_id"] == stored.videos[0]["id"] + 1
    assert accepted["job_id"] == stored.videos[0]["job_id"] + 1


def test_a_video_is_probed_off_the_event_loop(
    client: TestClient, stored: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed_on_loop: list[bool] = []
    real_probe = videos_service.probe

    def probe(path: Path) -> VideoInfo:
        try:
            asyncio.get_running_loop()
            probed_on_loop.append(True)
        except RuntimeError:
            probed_on_loop.append(False)
        return real_probe(path)

    monkeypatch.setattr(videos_service, "probe", probe)
    response = client.post("/videos", files={"video": ("noise.mp4", b"\1" * 100, "video/mp4")})
    assert response.status_code == 415
    assert probed_on_loop == [False]
    assert_store_intact(client, data_dir, stored)


def _part(name: str = "video", filename: str = "a.mp4") -> bytes:
    return f'--b\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'.encode()


def _malformed(reason: str) -> dict[str, str]:
    return {"detail": f"malformed multipart/form-data body: {reason}"}


CUT = _malformed("the body ends before its closing boundary")
# case: content type, body (None: a well-formed part holding the clip), status, JSON body
MALFORMED: dict[str, tuple[str | None, bytes | None, int, dict[str, Any]]] = {
    "no boundary": (
        "multipart/form-data",
        _part() + b"data\r\n--b--\r\n",
        400,
        _malformed("no boundary in the Content-Type header"),
    ),
    "empty boundary": (
        "multipart/form-data; boundary=",
        _part() + b"data\r\n--b--\r\n",
        400,
        _malformed("no boundary in the Content-Type header"),
    ),
    "cut before the closing boundary": (MULTIPART, None, 400, CUT),
    "cut in the part's headers": (MULTIPART, b"--b\r\nContent-Disposition: form-da", 400, CUT),
    "empty body": (MULTIPART, b"", 400, CUT),
    "part without headers": (
        MULTIPART,
        b"--b\r\n\r\nsome bytes\r\n--b--\r\n",
        400,
        _malformed('a part has no Content-Disposition "form-data" header with a field name'),
    ),
    "garbage bytes": (
        MULTIPART,
        bytes(range(256)) * 20,
        400,
        _malformed("Expected boundary character 45, got 0 at index 2"),
    ),
    "a broken header line": (
        MULTIPART,
        b"--b\r\nContent-Disposition form-data\r\n\r\ndata\r\n--b--\r\n",
        400,
        _malformed("Found invalid character 32 in header at 24"),
    ),
    "no line break after the boundary": (
        MULTIPART,
        b"--bXYZ",
        400,
        _malformed("Did not find CR at end of boundary (3)"),
    ),
}
NOT_MULTIPART = ["text/plain", "application/json", "application/x-www-form-urlencoded", None]


@pytest.mark.parametrize("path", ["/videos", "/search"])
@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_multipart_body_is_400_and_nothing_is_kept(
    client: TestClient, stored: Store, data_dir: Path, clip: bytes, path: str, case: str
) -> None:
    content_type, body, status, detail = MALFORMED[case]
    if body is None:
        body = _part() + clip[: len(clip) // 2]
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=body, headers=headers)
    assert (response.status_code, response.json()) == (status, detail)
    assert_store_intact(client, data_dir, stored)


@pytest.mark.parametrize("path", ["/videos", "/search"])
@pytest.mark.parametrize("content_type", NOT_MULTIPART, ids=[str(kind) for kind in NOT_MULTIPART])
def test_a_body_that_is_no_multipart_form_is_422_and_nothing_is_kept(
    client: TestClient, stored: Store, data_dir: Path, clip: bytes, path: str, content_type: str | None
) -> None:
    """Not malformed but another kind of body: the required file is missing, as for /images."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=clip, headers=headers)
    files = "`video`" if path == "/videos" else "`image` or `video`"
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["body"],
                "msg": f"send multipart/form-data with a {files} file",
                "input": None,
            }
        ]
    }
    assert_store_intact(client, data_dir, stored)
