"""GET /videos/{id}/file: the stored video, whole or by HTTP Range, so that a browser can seek it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.search.api.helpers import FAMILY_KEY, WRITE_KEY, upload_video
from tests.search.video.conftest import write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Half a second of nobody: a real MPEG-4 file of a few kilobytes."""
    return write_clip(tmp_path_factory.mktemp("clips") / "blank.mp4", {}, lambda _: [], 0.5).read_bytes()


@pytest.fixture
def stored(client: TestClient, clip: bytes) -> int:
    return int(upload_video(client, clip, name="blank.mp4")["video_id"])


def test_the_whole_file_with_its_type_and_accept_ranges(client: TestClient, clip: bytes, stored: int) -> None:
    answer = client.get(f"/videos/{stored}/file")
    assert answer.status_code == 200 and answer.content == clip
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.headers["accept-ranges"] == "bytes"
    assert int(answer.headers["content-length"]) == len(clip)


@pytest.mark.parametrize(
    ("asked", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),  # to the end
        ("bytes=-50", -50, None),  # the last 50 bytes
        ("bytes=10-999999999", 10, None),  # past the end: cut to it
    ],
)
def test_a_range_is_a_206_with_exactly_those_bytes(
    client: TestClient, clip: bytes, stored: int, asked: str, start: int, end: int | None
) -> None:
    expected = clip[start:] if end is None else clip[start : end + 1]
    first = len(clip) + start if start < 0 else start
    answer = client.get(f"/videos/{stored}/file", headers={"Range": asked})
    assert answer.status_code == 206 and answer.content == expected
    assert answer.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(clip)}"
    assert answer.headers["content-type"] == "video/mp4"


def test_several_ranges_are_one_multipart_answer(client: TestClient, clip: bytes, stored: int) -> None:
    answer = client.get(f"/videos/{stored}/file", headers={"Range": "bytes=0-9, 20-29"})
    assert answer.status_code == 206
    assert answer.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert clip[0:10] in answer.content and clip[20:30] in answer.content


def test_a_range_past_the_end_is_a_416_naming_the_size(client: TestClient, clip: bytes, stored: int) -> None:
    answer = client.get(f"/videos/{stored}/file", headers={"Range": f"bytes={len(clip)}-"})
    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{len(clip)}"
    assert answer.json() == {"detail": "no byte of the Range lies in the file"}


def test_a_malformed_range_is_a_400_saying_what_is_wrong(client: TestClient, stored: int) -> None:
    for asked, detail in [
        ("lines=0-9", "Only support bytes range"),
        ("bytes=9-0", "Range header: start must be less than end"),
        ("bytes=abc", "Range header: range must be requested"),
        ("bytes", "Malformed range header."),
    ]:
        answer = client.get(f"/videos/{stored}/file", headers={"Range": asked})
        assert answer.status_code == 400, asked
        assert answer.json() == {"detail": detail}, asked
        assert int(answer.headers["content-length"]) == len(answer.content)


def test_a_missing_or_deleted_video_is_a_404(client: TestClient, stored: int) -> None:
    assert client.get("/videos/999999/file").json() == {"detail": "no video with id 999999"}
    assert client.delete(f"/videos/{stored}").status_code == 204
    assert client.get(f"/videos/{stored}/file").status_code == 404


def test_openapi_documents_the_partial_answers(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/videos/{video_id}/file"]["get"]["responses"]
    assert {"200", "206", "400", "401", "403", "404", "416"} <= set(responses)


def test_a_key_of_another_collection_gets_a_404(keyed: TestClient, clip: bytes) -> None:
    write = {"X-API-Key": WRITE_KEY}
    upload = keyed.post("/videos", files={"video": ("c.mp4", clip, "video/mp4")}, headers=write)
    video_id = upload.json()["video_id"]
    assert keyed.get(f"/videos/{video_id}/file").status_code == 401
    answer = keyed.get(f"/videos/{video_id}/file", headers={"X-API-Key": FAMILY_KEY})
    assert answer.json() == {"detail": f"no video with id {video_id}"}
    assert keyed.get(f"/videos/{video_id}/file", headers=write).content == clip
