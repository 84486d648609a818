"""Videos over a fake embedder: upload, background job, people and time ranges, thumbnails, search,
deletion, cancellation, retries, the size limit, and a SIGKILL in the middle of a job. Files that
are no video and malformed bodies: test_video_uploads.py.

The clips are real MPEG-4 files (decoded by the real pipeline); the fake embedder finds each person
as a square of their colour (``tests.search.fakes.MARKERS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import ENDED, finished, upload_video, wait_for_job
from tests.search.fakes import MARKERS, FakeEmbedder, photo
from tests.search.storage.records import stored_files
from tests.search.video.conftest import CLIP_FPS, CLIP_SIZE, PHOTO_SIDE, Placement, write_clip
from tools.processes import search_service

SQUARES = {name: np.full((PHOTO_SIDE, PHOTO_SIDE, 3), colour, np.uint8) for name, colour in MARKERS.items()}
SECONDS = 5.0
SAMPLES = 10  # at the default 2 frames per second
ALICE_RANGES = [[0.0, 1.25], [3.5, 4.75]]  # samples 0-1 s and 3.5-4.5 s, each plus half an interval
BOB_RANGES = [[0.0, 4.75]]


def alice_and_bob(number: int) -> list[Placement]:
    """Bob on the right all along; Alice on the left for the first 1.5 s and again from 3.5 s."""
    t = number / CLIP_FPS
    people = [("bob", 310, 60)]
    if t < 1.5 or t >= 3.5:
        people.append(("alice", 20, 60))
    return people


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_clip(tmp_path_factory.mktemp("clips") / "alice_bob.mp4", SQUARES, alice_and_bob, SECONDS)
    return path.read_bytes()


@pytest.fixture(scope="module")
def blank_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Half a second of nobody: one sample, no face."""
    path = write_clip(tmp_path_factory.mktemp("clips") / "blank.mp4", SQUARES, lambda _: [], 0.5)
    return path.read_bytes()


@pytest.fixture
def slow_client(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> Iterator[TestClient]:
    """One worker; one frame per embedder call, each taking 0.2 s: a job runs for about 2 s."""
    fake_embedder.delay_s = 0.2
    with TestClient(create_app(make_settings(video={"batch_frames": 1, "workers": 1}))) as client:
        yield client


def wait_until_the_worker_moves_on(client: TestClient, blank_clip: bytes) -> None:
    """Wait until the one worker has left the job it was running: a job queued behind it (a blank
    clip, one sample without a face, in a collection of its own) has ended."""
    marker = upload_video(client, blank_clip, name="blank.mp4", collection="marker")
    assert finished(client, marker["job_id"])["state"] == "done"


def video_hits(client: TestClient, query: bytes, **params: str | int) -> list[dict[str, Any]]:
    response = client.post("/search", files={"image": ("q.png", query, "image/png")}, params=params)
    assert response.status_code == 200, response.text
    [face] = response.json()["faces"]
    return [hit for hit in face["hits"] if hit["source"] == "video"]


def test_upload_is_analysed_into_people_with_time_ranges(client: TestClient, clip: bytes) -> None:
    accepted = upload_video(client, clip, external_id="cam1/alice_bob.mp4", collection="cams")
    assert set(accepted) == {"job_id", "video_id", "duplicate"} and not accepted["duplicate"]
    job = finished(client, accepted["job_id"])
    assert job["state"] == "done" and job["error"] is None and job["progress"] == 1.0
    assert (job["frames_processed"], job["faces_found"], job["attempts"]) == (SAMPLES, 16, 1)
    assert job["timings"]["total"] >= job["timings"]["detect_embed"] > 0

    video = client.get(f"/videos/{accepted['video_id']}").json()
    assert (video["duration"], video["fps"]) == (pytest.approx(SECONDS), CLIP_FPS)
    assert (video["width"], video["height"]) == CLIP_SIZE
    assert (video["state"], video["job_id"], video["error"]) == ("done", accepted["job_id"], None)
    assert (video["external_id"], video["collection"]) == ("cam1/alice_bob.mp4", "cams")
    alice, bob = sorted(video["people"], key=lambda person: person["tracks"][0]["box"][0])
    assert alice["time_ranges"] == ALICE_RANGES and bob["time_ranges"] == BOB_RANGES
    assert [(track["start"], track["end"]) for track in alice["tracks"]] == [tuple(r) for r in ALICE_RANGES]
    assert alice["tracks"][0]["box"] == pytest.approx([20, 60, 170, 210], abs=2)

    thumbnail = client.get(alice["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    pixels = cv2.imdecode(np.frombuffer(thumbnail.content, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    assert pixels[pixels.shape[0] // 2, pixels.shape[1] // 2] == pytest.approx([40, 40, 230], abs=40)  # BGR

    assert client.get("/videos", params={"collection": "cams"}).json()["videos"][0]["id"] == video["id"]
    assert client.get("/videos", params={"collection": "other"}).json()["videos"] == []


def test_search_gives_one_hit_per_person_with_its_ranges(client: TestClient, clip: bytes) -> None:
    accepted = upload_video(client, clip, external_id="clip.mp4")
    finished(client, accepted["job_id"])
    hits = video_hits(client, photo("alice", variant=1))
    # Alice's two tracks hold several vectors; they merge into one hit, as do Bob's.
    assert len(hits) == 2 and {hit["id"] for hit in hits} == {accepted["video_id"]}
    best, other = hits
    assert best["match"] and not other["match"]
    assert best["time_ranges"] == ALICE_RANGES and other["time_ranges"] == BOB_RANGES
    assert best["external_id"] == "clip.mp4" and best["score"] > 0.9
    assert len(best["range_scores"]) == 2 and max(best["range_scores"]) == pytest.approx(best["score"])
    assert best["box"] == pytest.approx([20, 60, 170, 210], abs=2)
    assert best["best_time"] in (0.0, 0.5, 1.0, 3.5, 4.0, 4.5)
    assert client.get(best["thumbnail_url"]).status_code == 200

    assert video_hits(client, photo("alice", variant=1), source="images") == []
    assert len(video_hits(client, photo("alice", variant=1), source="videos", k=1)) == 1


def test_the_same_video_twice_is_one_video(client: TestClient, clip: bytes) -> None:
    first = upload_video(client, clip)
    again = upload_video(client, clip, name="copy.mp4")
    assert again == {**first, "duplicate": True}
    finished(client, first["job_id"])
    elsewhere = upload_video(client, clip, collection="other")
    assert not elsewhere["duplicate"] and elsewhere["video_id"] != first["video_id"]
    finished(client, elsewhere["job_id"])
    assert len(client.get("/videos").json()["videos"]) == 2


def test_delete_removes_faces_file_and_thumbnails(
    client: TestClient, clip: bytes, make_settings: Callable[..., SearchSettings]
) -> None:
    accepted = upload_video(client, clip)
    finished(client, accepted["job_id"])
    video = client.get(f"/videos/{accepted['video_id']}").json()
    assert len(video_hits(client, photo("alice"))) == 2

    assert client.delete(f"/videos/{video['id']}").status_code == 204
    assert video_hits(client, photo("alice")) == []
    assert client.get(f"/videos/{video['id']}").status_code == 404
    assert client.get(video["people"][0]["thumbnail_url"]).status_code == 404
    assert client.get(f"/jobs/{accepted['job_id']}").status_code == 404
    assert client.delete(f"/videos/{video['id']}").status_code == 404
    assert stored_files(make_settings().data_dir) == []


def test_cancelling_a_running_job_leaves_nothing_searchable(
    slow_client: TestClient, clip: bytes, blank_clip: bytes
) -> None:
    accepted = upload_video(slow_client, clip)
    job_id = accepted["job_id"]
    wait_for_job(slow_client.get, job_id, lambda job: job["frames_processed"] >= 2)
    cancelled = slow_client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    wait_until_the_worker_moves_on(slow_client, blank_clip)  # past its next batch, where it stopped
    job = slow_client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["frames_processed"] < SAMPLES
    assert video_hits(slow_client, photo("alice")) == []
    video = slow_client.get(f"/videos/{accepted['video_id']}").json()
    assert (video["state"], video["people"]) == ("cancelled", [])
    collections = slow_client.get("/collections").json()["collections"]
    assert {entry["name"]: entry["faces"] for entry in collections} == {"default": 0, "marker": 0}
    again = slow_client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["detail"]


def test_deleting_a_video_cancels_its_job(slow_client: TestClient, clip: bytes, blank_clip: bytes) -> None:
    accepted = upload_video(slow_client, clip)
    wait_for_job(slow_client.get, accepted["job_id"], lambda job: job["frames_processed"] >= 1)
    assert slow_client.delete(f"/videos/{accepted['video_id']}").status_code == 204
    wait_until_the_worker_moves_on(slow_client, blank_clip)  # past its next batch, where it stopped
    assert video_hits(slow_client, photo("alice")) == []
    assert [entry["name"] for entry in slow_client.get("/collections").json()["collections"]] == ["marker"]
    assert slow_client.get(f"/jobs/{accepted['job_id']}").status_code == 404


def test_a_job_stopped_with_the_service_runs_again_at_the_next_start(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder, clip: bytes
) -> None:
    fake_embedder.delay_s = 0.2
    settings = make_settings(video={"batch_frames": 1})
    with TestClient(create_app(settings)) as client:
        accepted = upload_video(client, clip)
        wait_for_job(client.get, accepted["job_id"], lambda job: job["frames_processed"] >= 1)
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/jobs/{accepted['job_id']}").json()["state"] in ("queued", "running")
        job = finished(client, accepted["job_id"])
        assert (job["state"], job["attempts"], job["frames_processed"]) == ("done", 2, SAMPLES)
        assert len(video_hits(client, photo("alice"))) == 2


def test_an_unreachable_embedder_fails_the_job_with_the_reason(
    client: TestClient, fake_embedder: FakeEmbedder, clip: bytes
) -> None:
    # The first attempt and its three retries, of each of the clip's two batches (both in flight).
    fake_embedder.fail_next = [503] * 4 * 2
    job = finished(client, upload_video(client, clip)["job_id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("embedder: ") and "unavailable" in job["error"]
    assert job["error"].endswith("(upload the video again to retry)")


def test_uploading_a_failed_video_again_retries_it(
    client: TestClient, fake_embedder: FakeEmbedder, clip: bytes
) -> None:
    # The first attempt and its three retries, of each of the clip's two batches (both in flight).
    fake_embedder.fail_next = [503] * 4 * 2
    first = upload_video(client, clip)
    assert finished(client, first["job_id"])["state"] == "failed"
    again = upload_video(client, clip)
    assert again["duplicate"] and again["video_id"] == first["video_id"]
    assert again["job_id"] != first["job_id"]
    assert finished(client, again["job_id"])["state"] == "done"
    assert len(video_hits(client, photo("alice"))) == 2


def test_over_the_size_limit_is_refused_and_nothing_is_stored(
    make_settings: Callable[..., SearchSettings],
) -> None:
    settings = make_settings(uploads={"max_video_bytes": 50_000})
    big = bytes(60_000)
    with TestClient(create_app(settings)) as client:
        # Content-Length announces it: refused before a byte is read.
        declared = client.post("/videos", files={"video": ("big.mp4", big, "video/mp4")})
        assert declared.status_code == 413 and "limit" in declared.json()["detail"]
        # Chunked: refused by the upload reader at the first chunk over the limit.
        boundary = "xyz"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n\r\n'

        def body() -> Iterator[bytes]:
            yield head.encode()
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]
            yield f"\r\n--{boundary}--\r\n".encode()

        streamed = client.post(
            "/videos", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["detail"] == "big.mp4: over the limit of 50000 bytes"
        assert client.get("/videos").json()["videos"] == []
    assert stored_files(settings.data_dir) == []


def test_bad_forms_are_a_422_and_store_nothing(
    client: TestClient, clip: bytes, make_settings: Callable[..., SearchSettings]
) -> None:
    missing = client.post("/videos", data={"collection": "x"}, files={"other": ("a.txt", b"hello")})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "video"]
    bad_collection = client.post(
        "/videos", files={"video": ("a.mp4", clip)}, data={"collection": "no spaces"}
    )
    assert bad_collection.status_code == 422
    assert bad_collection.json()["detail"][0]["loc"] == ["body", "collection"]
    assert client.post("/videos", data={"collection": "x"}).status_code == 422
    assert client.get("/videos").json()["videos"] == []
    assert stored_files(make_settings().data_dir) == []


def test_unknown_ids_and_metrics(client: TestClient, clip: bytes) -> None:
    assert client.get("/jobs/999").status_code == 404
    assert client.delete("/jobs/999").status_code == 404
    assert client.get("/videos/999").status_code == 404
    assert client.get("/videos/999/thumbnails/1").status_code == 404
    finished(client, upload_video(client, clip)["job_id"])
    metrics = client.get("/metrics").text
    assert 'facesearch_video_jobs{state="done"} 1.0' in metrics
    assert "facesearch_video_seconds_processed_total" in metrics
    assert 'facesearch_video_stage_seconds_total{stage="detect_embed"}' in metrics


def test_embedder_gets_frames_at_the_detection_scale(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder, clip: bytes
) -> None:
    # 480 px frames detected as if 240 px wide: faces of at least 20 px there are 40 px here.
    with TestClient(create_app(make_settings(video={"detect_side": 240}))) as client:
        finished(client, upload_video(client, clip)["job_id"])
    # What the service asks of the detector is part of the wire contract: the query parameters.
    assert fake_embedder.params[-1]["min_face_size"] == "40"
    assert float(fake_embedder.params[-1]["threshold"]) == make_settings().video.detection_threshold


@pytest.mark.slow  # a real server process killed and restarted
def test_a_job_killed_mid_run_is_run_again_after_restart(
    fake_embedder: FakeEmbedder, tmp_path: Path, clip: bytes
) -> None:
    fake_embedder.delay_s = 0.2
    service = search_service(str(tmp_path / "data"), fake_embedder.url)
    service.env["SEARCH_VIDEO_BATCH_FRAMES"] = "1"
    service.start()
    try:
        post = httpx.post(f"{service.url}/videos", files={"video": ("clip.mp4", clip)}, timeout=30)
        accepted = post.json()
        get = httpx.Client(base_url=service.url, timeout=10).get
        wait_for_job(
            get, accepted["job_id"], lambda job: job["state"] == "running" and job["frames_processed"] >= 2
        )
        service.kill()
        service.start()
        job = wait_for_job(get, accepted["job_id"], lambda job: job["state"] in ENDED)
        assert (job["state"], job["attempts"], job["frames_processed"]) == ("done", 2, SAMPLES)
        # The same clip run once, uninterrupted, in another collection: the same faces, no more.
        other = httpx.post(
            f"{service.url}/videos", files={"video": ("clip.mp4", clip)}, data={"collection": "b"}, timeout=30
        ).json()
        wait_for_job(get, other["job_id"], lambda job: job["state"] in ENDED)
        faces = {entry["name"]: entry["faces"] for entry in get("/collections").json()["collections"]}
        assert faces["default"] == faces["b"] > 0
        hits = httpx.post(
            f"{service.url}/search",
            files={"image": ("q.png", photo("alice"))},
            params={"collection": "default"},
        ).json()["faces"][0]["hits"]
        assert [hit["time_ranges"] for hit in hits if hit["match"]] == [ALICE_RANGES]
    finally:
        service.stop()


def test_a_job_whose_frames_come_from_another_model_fails_and_stores_nothing(
    client: TestClient, fake_embedder: FakeEmbedder, clip: bytes
) -> None:
    ingest = client.post("/images", files={"image": ("p.png", photo("alice"), "image/png")})
    assert ingest.status_code == 200  # the store now holds the fake's model
    fake_embedder.model = "another-model"
    job = finished(client, upload_video(client, clip)["job_id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("embedder: ") and "another-model" in job["error"]
    assert client.get("/collections").json()["collections"][0]["faces"] == 1  # the photo's alone
