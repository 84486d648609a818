"""Search by video clip over a fake embedder: each person of the clip becomes a query face with its
time ranges, thumbnail and hits; limits, bad files and bad forms; the staging file always goes.

The clips are real MPEG-4 files (decoded by the real pipeline); the fake embedder finds each person
as a square of their colour (``tests.search.fakes.MARKERS``), with the same identity vectors as the
test photos of that person.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from search_service.video import probe
from tests.search.api.helpers import finished, ingest, upload_video
from tests.search.api.test_videos import SQUARES, alice_and_bob
from tests.search.fakes import FakeEmbedder, photo
from tests.search.video.conftest import BACKGROUND, CLIP_FPS, CLIP_SIZE, Placement, write_clip

QUERY_SECONDS = 3.0
# Samples at 0, 0.5, ... s; a range ends half a sample interval after its last sample.
QUERY_ALICE_RANGES = [[0.0, 1.75]]  # on screen for t < 2 s
QUERY_BOB_RANGES = [[1.0, 2.75]]  # on screen for 1 <= t < 3 s
STORED_ALICE_RANGES = [[0.0, 1.25], [3.5, 4.75]]  # see test_videos.alice_and_bob


def alice_then_bob(number: int) -> list[Placement]:
    t = number / CLIP_FPS
    people: list[Placement] = []
    if t < 2:
        people.append(("alice", 20, 60))
    if t >= 1:
        people.append(("bob", 310, 60))
    return people


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("query_clips")
    made = {
        "query": write_clip(folder / "query.mp4", SQUARES, alice_then_bob, QUERY_SECONDS),
        "stored": write_clip(folder / "stored.mp4", SQUARES, alice_and_bob, 5.0),
        "blank": write_clip(folder / "blank.mp4", SQUARES, lambda _: [], 2.0),
        "headerless": write_elementary_stream(folder / "headerless.m4v", 4.0),
    }
    return {name: path.read_bytes() for name, path in made.items()}


def write_elementary_stream(path: Path, seconds: float, fps: int = 25) -> Path:
    """A blank clip as a raw MPEG-4 video stream: no container, so nothing states its length."""
    width, height = CLIP_SIZE
    with av.open(str(path), "w", format="m4v") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(round(seconds * fps)):
            pixels = np.full((height, width, 3), BACKGROUND, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def post_clip(
    client: TestClient, data: bytes, name: str = "query.mp4", **form: str | int | float
) -> dict[str, Any]:
    """POST /search with a clip, whatever the answer: its status and JSON body together."""
    response = client.post(
        "/search", files={"video": (name, data, "video/mp4")}, data={k: str(v) for k, v in form.items()}
    )
    return {"status": response.status_code, **response.json()}


def staging_files(settings: SearchSettings) -> list[Path]:
    """Files left in the staging directory, where every upload streams first."""
    return list((settings.data_dir / "media" / "tmp").iterdir())


def decoded_jpeg(url: str) -> np.ndarray:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(url[len(prefix) :]), np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    return pixels


@pytest.fixture
def settings(make_settings: Callable[..., SearchSettings]) -> SearchSettings:
    return make_settings()


@pytest.fixture
def client(settings: SearchSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_each_person_of_the_clip_finds_their_photos_and_videos(
    client: TestClient, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    [alice_photo] = ingest(client, photo("alice"), external_id="alice.png")
    ingest(client, photo("carol"), photo("dave"))
    video = upload_video(client, clips["stored"], external_id="stored.mp4")
    assert finished(client, video["job_id"])["state"] == "done"

    answer = post_clip(client, clips["query"])
    assert answer["status"] == 200, answer
    assert answer["threshold"] == 0.9  # the fake model's own, as for photos
    alice, bob = answer["faces"]  # in order of first appearance in the clip
    assert alice["time_ranges"] == QUERY_ALICE_RANGES and bob["time_ranges"] == QUERY_BOB_RANGES
    assert alice["box"] == pytest.approx([20, 60, 170, 210], abs=2)
    assert bob["box"] == pytest.approx([310, 60, 460, 210], abs=2)
    assert alice["best_time"] in (0.0, 0.5, 1.0, 1.5) and 0.9 < alice["score"] <= 1.0
    thumbnail = decoded_jpeg(alice["thumbnail_url"])
    assert thumbnail[thumbnail.shape[0] // 2, thumbnail.shape[1] // 2] == pytest.approx([40, 40, 230], abs=40)

    # Alice's matches: her photo and her person in the stored video (with its ranges), nobody else.
    matches = [hit for hit in alice["hits"] if hit["match"]]
    assert {(hit["source"], hit["external_id"]) for hit in matches} == {
        ("image", "alice.png"),
        ("video", "stored.mp4"),
    }
    [photo_hit] = [hit for hit in matches if hit["source"] == "image"]
    assert photo_hit["id"] == alice_photo["id"] and photo_hit["time_ranges"] is None
    [video_hit] = [hit for hit in matches if hit["source"] == "video"]
    assert video_hit["time_ranges"] == STORED_ALICE_RANGES and video_hit["score"] > 0.9
    assert len(video_hit["range_scores"]) == 2 and video_hit["thumbnail_url"].startswith("/videos/")
    # One hit per photo face or video person, best first, as for a photo query: 3 photos, 2 people.
    assert len(alice["hits"]) == 5
    assert [hit["score"] for hit in alice["hits"]] == sorted(
        (hit["score"] for hit in alice["hits"]), reverse=True
    )
    # Bob has no photo: his one match is his person in the stored video, all along it.
    [bob_match] = [hit for hit in bob["hits"] if hit["match"]]
    assert (bob_match["source"], bob_match["time_ranges"]) == ("video", [[0.0, 4.75]])

    # Options as form fields (or query parameters), as for photos; nothing of the query is stored.
    only_photos = post_clip(client, clips["query"], source="images", k=1)
    assert [len(face["hits"]) for face in only_photos["faces"]] == [1, 1]
    assert only_photos["faces"][0]["hits"][0]["external_id"] == "alice.png"
    assert len(client.get("/videos").json()["videos"]) == 1
    assert staging_files(settings) == []


def test_photo_queries_keep_their_shape(client: TestClient) -> None:
    ingest(client, photo("alice"))
    response = client.post("/search", files={"image": ("q.png", photo("alice", variant=1), "image/png")})
    [face] = response.json()["faces"]
    assert (face["time_ranges"], face["best_time"], face["thumbnail_url"]) == (None, None, None)
    assert face["hits"][0]["match"]


def test_a_clip_without_a_face_is_a_422(
    client: TestClient, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    answer = post_clip(client, clips["blank"], name="blank.mp4")
    assert answer == {"status": 422, "detail": "no face found in the query clip 'blank.mp4'"}
    assert staging_files(settings) == []


def test_a_clip_over_the_length_limit_is_a_413_before_it_is_decoded(
    make_settings: Callable[..., SearchSettings], clips: dict[str, bytes]
) -> None:
    settings = make_settings(video={"max_query_seconds": 2.5})
    with TestClient(create_app(settings)) as client:
        answer = post_clip(client, clips["query"])
        assert answer["status"] == 413
        # The length the container states, not a count of decoded frames.
        assert answer["detail"] == "query.mp4: a query clip may last at most 2.5 s; this one lasts 3.0 s"
        assert client.get("/videos").json()["videos"] == []
        assert post_clip(client, clips["blank"])["status"] == 422  # 2 s: within the limit
    assert staging_files(settings) == []


def test_a_clip_whose_container_states_no_length_is_stopped_while_decoding(
    make_settings: Callable[..., SearchSettings], clips: dict[str, bytes], tmp_path: Path
) -> None:
    # A raw MPEG-4 elementary stream has no container header: probing cannot tell its length.
    raw_path = tmp_path / "raw.m4v"
    raw_path.write_bytes(clips["headerless"])
    assert probe(raw_path).duration == 0.0
    # 1 s at 2 samples/s: 3 samples at most; the clip runs 4 s and the embedder gets batches of 2.
    settings = make_settings(video={"max_query_seconds": 1.0, "batch_frames": 2})
    with TestClient(create_app(settings)) as client:
        answer = post_clip(client, clips["headerless"], name="raw.m4v")
        assert answer["status"] == 413
        assert answer["detail"] == (
            "raw.m4v: a query clip may last at most 1 s; this one lasts longer than its header says"
        )
        assert client.get("/videos").json()["videos"] == []
    assert staging_files(settings) == []
    # Within a limit it fits, the same clip decodes to its end: blank, so nobody is found.
    settings = make_settings(video={"max_query_seconds": 10.0, "batch_frames": 2})
    with TestClient(create_app(settings)) as client:
        answer = post_clip(client, clips["headerless"], name="raw.m4v")
    assert answer == {"status": 422, "detail": "no face found in the query clip 'raw.m4v'"}
    assert staging_files(settings) == []


def test_a_clip_over_the_size_limit_is_a_413(
    make_settings: Callable[..., SearchSettings], clips: dict[str, bytes]
) -> None:
    settings = make_settings(video={"max_query_bytes": 10_000})
    with TestClient(create_app(settings)) as client:
        answer = post_clip(client, clips["query"])
        assert answer == {"status": 413, "detail": "query.mp4: over the limit of 10000 bytes"}
        # Each file is held to its own limit: a photo larger than the clip limit is fine.
        large_photo = photo("alice", size=(96, 96))
        assert len(large_photo) > 10_000
        assert client.post("/search", files={"image": ("q.png", large_photo)}).status_code == 200
    assert staging_files(settings) == []


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("noise.mp4", np.random.default_rng(0).bytes(5000), "not a readable media file"),
        ("empty.mp4", b"", "the file is empty"),
        ("face.png", photo("alice"), "a still image"),
    ],
)
def test_files_that_are_no_video_are_a_415(
    client: TestClient, settings: SearchSettings, name: str, data: bytes, reason: str
) -> None:
    answer = post_clip(client, data, name=name)
    assert answer["status"] == 415
    assert answer["detail"].startswith(f"{name}: not a decodable video: ") and reason in answer["detail"]
    assert staging_files(settings) == []


def test_a_truncated_clip_is_a_415(
    client: TestClient, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    answer = post_clip(client, clips["query"][: len(clips["query"]) // 3], name="cut.mp4")
    assert answer["status"] == 415 and "not a decodable video" in answer["detail"]
    assert staging_files(settings) == []


def test_exactly_one_of_image_and_video(
    client: TestClient, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    both = client.post(
        "/search",
        files=[
            ("image", ("q.png", photo("alice"), "image/png")),
            ("video", ("q.mp4", clips["query"], "video/mp4")),
        ],
    )
    assert both.status_code == 422
    [error] = both.json()["detail"]
    assert error["msg"] == "send either `image` or `video`, not both" and error["loc"] == ["body", "video"]

    neither = client.post("/search", data={"k": "3"}, files={"other": ("a.txt", b"hello")})
    assert neither.status_code == 422
    [error] = neither.json()["detail"]
    assert error["msg"] == "no file: send one as `image` or `video`" and error["loc"] == ["body"]
    assert client.post("/search", data={"k": "3"}).status_code == 422  # not even multipart

    two_clips = client.post(
        "/search", files=[("video", ("a.mp4", clips["query"])), ("video", ("b.mp4", clips["query"]))]
    )
    assert (
        two_clips.status_code == 422 and two_clips.json()["detail"][0]["msg"] == "send one file per request"
    )
    assert staging_files(settings) == []


def test_bad_options_with_a_clip_are_a_422(
    client: TestClient, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    assert post_clip(client, clips["query"], k=0)["status"] == 422
    response = client.post("/search", files={"video": ("q.mp4", clips["query"])}, params={"source": "faces"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "source"
    assert staging_files(settings) == []


def test_a_clip_from_another_model_is_a_409_and_stores_nothing(
    client: TestClient, fake_embedder: FakeEmbedder, clips: dict[str, bytes], settings: SearchSettings
) -> None:
    ingest(client, photo("alice"))
    fake_embedder.model = "another-model"
    answer = post_clip(client, clips["query"])
    assert answer["status"] == 409 and "another-model" in answer["detail"]
    assert client.get("/collections").json()["collections"][0]["faces"] == 1
    assert staging_files(settings) == []


def test_openapi_documents_both_files_and_the_errors(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "video", "k", "threshold", "collection", "source"} <= set(schema["properties"])
    assert schema["properties"]["video"]["format"] == "binary" and "required" not in schema
    assert {"413", "415", "422"} <= set(operation["responses"])
    assert {parameter["name"] for parameter in operation["parameters"]} == {
        "k",
        "threshold",
        "collection",
        "source",
        "face_id",
    }
    query_face = client.get("/openapi.json").json()["components"]["schemas"]["QueryFace"]["properties"]
    assert {"box", "score", "hits", "time_ranges", "best_time", "thumbnail_url"} <= set(query_face)


def test_the_limits_are_read_from_the_environment(
    make_settings: Callable[..., SearchSettings],
    clips: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file here
    monkeypatch.setenv("SEARCH_VIDEO_MAX_QUERY_SECONDS", "2.5")
    with TestClient(create_app(make_settings())) as client:
        answer = post_clip(client, clips["query"])
    assert answer == {
        "status": 413,
        "detail": "query.mp4: a query clip may last at most 2.5 s; this one lasts 3.0 s",
    }
    monkeypatch.setenv("SEARCH_VIDEO_MAX_QUERY_SECONDS", "4")
    monkeypatch.setenv("SEARCH_VIDEO_MAX_QUERY_BYTES", str(len(clips["query"]) - 1))
    with TestClient(create_app(make_settings())) as client:
        answer = post_clip(client, clips["query"])
        assert answer == {
            "status": 413,
            "detail": f"query.mp4: over the limit of {len(clips['query']) - 1} bytes",
        }
        monkeypatch.setenv("SEARCH_VIDEO_MAX_QUERY_BYTES", str(len(clips["query"])))
    with TestClient(create_app(make_settings())) as client:
        assert post_clip(client, clips["query"])["status"] == 200
