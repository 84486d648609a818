"""POST /search with `face_id`: search with a stored face (of a photo, or a video person) instead of
an upload; the face itself is no hit, the answer says where it is, and the key's collections hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import FAMILY_KEY, WRITE_KEY, finished, ingest, upload_video
from tests.search.fakes import MARKERS, MATCH_THRESHOLD, FakeEmbedder, photo
from tests.search.video.conftest import PHOTO_SIDE, write_clip


def by_face(client: TestClient, face_id: int, **params: str | int | float) -> dict[str, Any]:
    """POST /search?face_id=... without a body; the answer, whatever its status."""
    answer = client.post("/search", params={"face_id": face_id, **params})
    return {"status": answer.status_code, **answer.json()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two seconds of Alice (left) and Bob (right), as squares of their colours."""
    squares = {
        name: np.full((PHOTO_SIDE, PHOTO_SIDE, 3), colour, np.uint8) for name, colour in MARKERS.items()
    }
    path = write_clip(
        tmp_path_factory.mktemp("clips") / "pair.mp4",
        squares,
        lambda _: [("alice", 20, 60), ("bob", 310, 60)],
        2.0,
    )
    return path.read_bytes()


def test_a_photo_face_finds_the_others_but_not_itself(client: TestClient) -> None:
    [alice, again, bob] = ingest(client, photo("alice"), photo("alice", variant=1), photo("bob"))
    [face] = alice["faces"]
    result = by_face(client, face["id"])
    assert result["status"] == 200
    assert result["query"] == {
        "source": "image",
        "id": alice["id"],
        "face_id": face["id"],
        # What the page shows of it, without fetching the photo.
        "external_id": alice["external_id"],
        "collection": alice["collection"],
        "filename": "p0.png",
        "width": alice["width"],
        "height": alice["height"],
    }
    [query_face] = result["faces"]
    assert query_face["box"] == face["box"] and query_face["score"] == face["score"]
    assert [(hit["id"], hit["match"]) for hit in query_face["hits"]] == [
        (again["id"], True),
        (bob["id"], False),
    ]
    assert result["threshold"] == MATCH_THRESHOLD  # the embedder's model's, as for a photo
    # Options apply as to any search.
    assert [hit["id"] for hit in by_face(client, face["id"], k=1)["faces"][0]["hits"]] == [again["id"]]
    assert by_face(client, face["id"], source="videos")["faces"][0]["hits"] == []
    assert by_face(client, face["id"], threshold=0.99)["faces"][0]["hits"][0]["match"] is False


def test_face_id_as_a_form_field(client: TestClient) -> None:
    """As the web page sends it: multipart form fields, no file."""
    [alice, again] = ingest(client, photo("alice"), photo("alice", variant=1))
    face_id = alice["faces"][0]["id"]
    answer = client.post("/search", data={"face_id": str(face_id), "k": "5"}, files={"none": ("", b"")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["query"]["face_id"] == face_id
    assert [hit["id"] for hit in answer.json()["faces"][0]["hits"]] == [again["id"]]


def test_a_video_person_is_searched_without_itself(client: TestClient, clip: bytes) -> None:
    [alice_photo] = ingest(client, photo("alice"))
    accepted = upload_video(client, clip)
    video_id = accepted["video_id"]
    assert finished(client, accepted["job_id"])["state"] == "done"
    people = client.get(f"/videos/{video_id}").json()["people"]
    alice, bob = sorted(people, key=lambda person: person["tracks"][0]["box"][0])
    assert alice["face_id"] != bob["face_id"]

    result = by_face(client, alice["face_id"])
    assert result["status"] == 200
    video = client.get(f"/videos/{video_id}").json()
    assert result["query"] == {
        "source": "video",
        "id": video_id,
        "face_id": alice["face_id"],
        "external_id": video["external_id"],
        "collection": video["collection"],
        "filename": "clip.mp4",
        "width": video["width"],
        "height": video["height"],
    }
    assert result["faces"][0]["box"] == pytest.approx(alice["tracks"][0]["box"])
    hits = result["faces"][0]["hits"]
    # Alice's photo matches; Bob, in the same video, is a hit but no match; Alice's own person is none.
    assert [(hit["source"], hit["id"], hit["match"]) for hit in hits] == [
        ("image", alice_photo["id"], True),
        ("video", video_id, False),
    ]
    assert hits[1]["person"] == bob["index"]


def test_an_unknown_or_deleted_face_is_a_404(client: TestClient) -> None:
    [alice] = ingest(client, photo("alice"))
    assert by_face(client, 999999) == {"status": 404, "detail": "no face with id 999999"}
    assert client.delete(f"/images/{alice['id']}").status_code == 204
    assert by_face(client, alice["faces"][0]["id"])["status"] == 404


def test_exactly_one_of_a_file_and_a_face_id(client: TestClient) -> None:
    [alice] = ingest(client, photo("alice"))
    face_id = alice["faces"][0]["id"]
    both = client.post(
        "/search", params={"face_id": face_id}, files={"image": ("q.png", photo("bob"), "image/png")}
    )
    assert both.status_code == 422
    [error] = both.json()["detail"]
    assert error["msg"] == "send either `image` or `face_id`, not both"
    neither = client.post("/search", data={"k": "3"}, files={"other": ("a.txt", b"hello")})
    assert neither.status_code == 422
    assert neither.json()["detail"][0]["msg"] == "no file: send one as `image` or `video`"
    for bad in ["0", "abc", str(2**63)]:
        answer = client.post("/search", params={"face_id": bad})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "face_id"], bad
        answer = client.post("/search", data={"face_id": bad}, files={"none": ("", b"")})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "face_id"], bad


def test_the_embedder_is_needed_only_for_its_models_threshold(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        [alice, _] = ingest(client, photo("alice"), photo("alice", variant=1))
    unreachable = settings.model_copy(
        update={"embedder": settings.embedder.model_copy(update={"url": "http://127.0.0.1:9"})}
    )
    with TestClient(create_app(unreachable)) as client:
        face_id = alice["faces"][0]["id"]
        refused = by_face(client, face_id)
        assert refused["status"] == 503 and "pass `threshold`" in refused["detail"]
        answer = by_face(client, face_id, threshold=0.5)
        assert answer["status"] == 200 and answer["threshold"] == 0.5
        assert answer["faces"][0]["hits"][0]["match"]


def test_an_embedder_running_another_model_of_the_same_dimension_lends_no_threshold(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        [alice, _] = ingest(client, photo("alice"), photo("alice", variant=1))
    fake_embedder.model = "another-model"  # as many dimensions as the stored vectors
    with TestClient(create_app(settings)) as client:
        face_id = alice["faces"][0]["id"]
        refused = by_face(client, face_id)
        assert refused["status"] == 409
        assert "another-model" in refused["detail"] and "pass `threshold`" in refused["detail"]
        answer = by_face(client, face_id, threshold=0.5)
        assert answer["status"] == 200 and answer["faces"][0]["hits"][0]["match"]


def test_a_face_of_a_collection_the_key_may_not_read_is_a_404(keyed: TestClient) -> None:
    write = {"X-API-Key": WRITE_KEY}
    family = {"X-API-Key": FAMILY_KEY}
    files = [("image", (f"p{n}.png", photo("alice", variant=n), "image/png")) for n in range(2)]
    work = keyed.post("/images", files=files, data={"collection": "work"}, headers=write).json()["images"]
    mine = keyed.post("/images", files=files[:1], data={"collection": "family"}, headers=write).json()[
        "images"
    ]
    work_face, family_face = work[0]["faces"][0]["id"], mine[0]["faces"][0]["id"]

    answer = keyed.post("/search", params={"face_id": work_face}, headers=family)
    assert (answer.status_code, answer.json()) == (404, {"detail": f"no face with id {work_face}"})
    # Its own face searches its own collection only: the photos in "work" are no hits.
    answer = keyed.post("/search", params={"face_id": family_face}, headers=family)
    assert answer.status_code == 200 and answer.json()["faces"][0]["hits"] == []
    answer = keyed.post("/search", params={"face_id": family_face}, headers=write)
    assert [hit["id"] for hit in answer.json()["faces"][0]["hits"]] == [entry["id"] for entry in work]


def test_openapi_documents_face_id_and_the_404(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "face_id" in schema["properties"] and not operation["requestBody"]["required"]
    assert "face_id" in {parameter["name"] for parameter in operation["parameters"]}
    assert "404" in operation["responses"]
    components = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"source", "id", "face_id"} <= set(components["SearchOrigin"]["properties"])
    assert "face_id" in components["VideoPerson"]["required"]
