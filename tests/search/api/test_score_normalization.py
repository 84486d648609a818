"""AS-norm through the API, over the fake embedder: searches score by cosine until the store's cohort
reaches its minimum, then by AS-norm (`score_kind`, `normalized_score`, a threshold in its units),
unless the request names a cosine threshold, normalisation is turned off, or the embedder's model
has no normalised threshold; photo, stored-face and clip queries alike.

A store with a full cohort takes a thousand distinct faces: it is built once per module (fifty
people to a photo) and each test gets a copy of its data directory, with a service of its own."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.services.asnorm import CohortProtocol, CohortScorer
from search_service.settings import SearchSettings
from search_service.storage import Storage
from tests.search.api.helpers import finished, post_images, search, upload_video
from tests.search.api.test_videos import SQUARES, alice_and_bob
from tests.search.fakes import MATCH_THRESHOLD, FakeEmbedder, face_vector, photo
from tests.search.polling import poll_until
from tests.search.video.conftest import write_clip

PROTOCOL = CohortProtocol()  # the service's
CROWD_PHOTOS = 20
PEOPLE_PER_PHOTO = 50  # 1,000 distinct faces: the whole cohort
# Where the fake model calls two faces one person in AS-norm units: its pairs of one person score
# about 20, of different people below 5.
NORMALIZED_THRESHOLD = 8.0
# Stored besides the crowd, outside the cohort: Alice in two photos and a video (with Bob), Bob in a photo.
OTHERS = [
    ("alice1.png", photo("alice", variant=1)),
    ("alice2.png", photo("alice", variant=2)),
    ("bob.png", photo("bob")),
]
ALICE = {("image", "alice1.png"), ("image", "alice2.png"), ("video", "stored.mp4")}
QUERY = photo("alice", variant=9)
QUERY_VECTOR = face_vector("alice", QUERY, 0)
# Opens a service on the test's data directory; keywords override settings, as make_settings's.
Serve = Callable[..., AbstractContextManager[TestClient]]


def crowd_photo(number: int) -> bytes:
    people = [f"crowd{number}-{i}" for i in range(PEOPLE_PER_PHOTO)]
    # Wide enough for the fake's boxes, 10 px apart.
    return photo(*people, size=(10 * PEOPLE_PER_PHOTO + 20, 48))


def cohort_status(client: TestClient) -> dict[str, Any]:
    status: dict[str, Any] = client.get("/healthz").json()["score_cohort"]
    return status


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's populated data directory is built, by the first test that needs it."""
    return tmp_path_factory.mktemp("populated") / "data"


@pytest.fixture(scope="module")
def stored_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_clip(tmp_path_factory.mktemp("clips") / "stored.mp4", SQUARES, alice_and_bob, 5.0)
    return path.read_bytes()


@pytest.fixture(scope="module")
def query_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A second of Alice alone."""
    path = write_clip(
        tmp_path_factory.mktemp("clips") / "query.mp4", SQUARES, lambda _: [("alice", 20, 60)], 1.0
    )
    return path.read_bytes()


def build(client: TestClient, stored_clip: bytes) -> None:
    """A thousand crowd faces, all of them the cohort; then the others (OTHERS, the video)."""
    crowd = post_images(
        client, *[(f"crowd{number}.png", crowd_photo(number)) for number in range(CROWD_PHOTOS)]
    )
    assert crowd["status"] == 200, crowd
    poll_until(
        lambda: cohort_status(client),
        lambda status: status["members"] == PROTOCOL.size,
        what="a full cohort",
    )
    assert post_images(client, *OTHERS)["status"] == 200
    video = upload_video(client, stored_clip, name="stored.mp4")
    assert finished(client, video["job_id"])["state"] == "done"


@pytest.fixture
def populated(
    template: Path,
    stored_clip: bytes,
    make_settings: Callable[..., SearchSettings],
    fake_embedder: FakeEmbedder,
    tmp_path: Path,
) -> Path:
    """This test's data directory (the one make_settings names): a copy of the module's store."""
    if not template.exists():
        settings = make_settings(data_dir=template, scoring={"cohort_check_interval_s": 0.02})
        with TestClient(create_app(settings)) as client:
            build(client, stored_clip)
    data_dir = tmp_path / "data"
    shutil.copytree(template, data_dir)
    return data_dir


@pytest.fixture
def serve(make_settings: Callable[..., SearchSettings]) -> Serve:

    @contextmanager
    def open_service(**overrides: Any) -> Iterator[TestClient]:
        with TestClient(create_app(make_settings(**overrides))) as client:
            yield client

    return open_service


def hits_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = [hit for face in answer["faces"] for hit in face["hits"]]
    return hits


def assert_cosine(answer: dict[str, Any], threshold: float) -> None:
    """Hits scored by cosine: ranked by it, matching from ``threshold``, with no normalised score."""
    assert (answer["score_kind"], answer["threshold"]) == ("cosine", threshold)
    for face in answer["faces"]:
        scores = [hit["score"] for hit in face["hits"]]
        assert scores == sorted(scores, reverse=True)
    assert all(hit["normalized_score"] is None for hit in hits_of(answer))
    assert all(hit["match"] == (hit["score"] >= threshold) for hit in hits_of(answer))


def assert_as_norm(answer: dict[str, Any], threshold: float = NORMALIZED_THRESHOLD) -> None:
    """Hits scored by AS-norm: ranked by their normalised score, matching from ``threshold``."""
    assert (answer["score_kind"], answer["threshold"]) == ("as_norm", threshold)
    for face in answer["faces"]:
        normalized = [hit["normalized_score"] for hit in face["hits"]]
        assert None not in normalized
        assert normalized == sorted(normalized, reverse=True)
    assert all(hit["match"] == (hit["normalized_score"] >= threshold) for hit in hits_of(answer))
    assert all(-1.0 <= hit["score"] <= 1.0 for hit in hits_of(answer))


def matches(answer: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(hit["source"], hit["filename"]) for hit in hits_of(answer) if hit["match"]}


def images_named(client: TestClient) -> dict[str, dict[str, Any]]:
    images = client.get("/images", params={"limit": 1000}).json()["images"]
    return {image["filename"]: image for image in images}


def expected_scores(
    data_dir: Path, query: np.ndarray, face_ids: list[int]
) -> tuple[list[float], list[float]]:
    """The cosines of ``query`` to these stored faces and their AS-norm scores against the store's
    cohort, computed here from what the store holds (read once the service has closed)."""
    storage = Storage.open(data_dir)
    try:
        ids, vectors = storage.faces.vectors(face_ids)
        cohort = storage.cohort.members().vectors
    finally:
        storage.close()
    assert ids.tolist() == sorted(face_ids)
    vectors = vectors[np.searchsorted(ids, face_ids)]
    scorer = CohortScorer(cohort, PROTOCOL)
    cosines = query[np.newaxis] @ vectors.T
    normalized = scorer.normalize(cosines, scorer.statistics(query), scorer.statistics(vectors))
    return cosines[0].tolist(), normalized[0].tolist()


def test_below_the_cohort_minimum_searches_rank_by_cosine(serve: Serve, fake_embedder: FakeEmbedder) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD  # calibrated, but no cohort to use it with
    with serve(scoring={"cohort_check_interval_s": 0.02}) as client:
        assert post_images(client, *OTHERS)["status"] == 200
        # Alice's two photos are near duplicates: one of them joins, with Bob.
        status = poll_until(
            lambda: cohort_status(client), lambda status: status["members"] == 2, what="two members"
        )
        assert status == {"active": False, "enabled": True, "members": 2, "size": 1000, "minimum": 900}
        answer = search(client, QUERY)
        assert_cosine(answer, MATCH_THRESHOLD)
        assert matches(answer) == {("image", "alice1.png"), ("image", "alice2.png")}
        assert len(hits_of(answer)) == 3


def test_a_full_cohort_normalises_the_scores(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        health = client.get("/healthz").json()
        assert health["score_cohort"] == {
            "active": True,
            "enabled": True,
            "members": 1000,
            "size": 1000,
            "minimum": 900,
        }
        assert health["embedder"]["normalized_threshold"] == NORMALIZED_THRESHOLD
        answer = search(client, QUERY, k=10)
    assert_as_norm(answer)
    [face] = answer["faces"]
    hits = face["hits"]
    assert len(hits) == 10
    # Alice's two photos and her person in the stored video match, and come first; nobody else does.
    assert matches(answer) == ALICE
    assert [hit["match"] for hit in hits] == [True] * 3 + [False] * 7
    [video_hit] = [hit for hit in hits if hit["source"] == "video" and hit["match"]]
    assert video_hit["time_ranges"] == [[0.0, 1.25], [3.5, 4.75]] and len(video_hit["range_scores"]) == 2
    # `score` is still the cosine, `normalized_score` the AS-norm against the store's cohort.
    face_ids = [hit["face_id"] for hit in hits]
    cosines, normalized = expected_scores(populated, QUERY_VECTOR, face_ids)
    assert [hit["score"] for hit in hits] == pytest.approx(cosines, abs=1e-5)
    assert [hit["normalized_score"] for hit in hits] == pytest.approx(normalized, rel=1e-4, abs=1e-4)
    assert all(hit["score"] > 0.9 for hit in hits[:3]) and all(hit["score"] < 0.5 for hit in hits[3:])


def test_a_request_threshold_is_a_cosine_and_ranks_by_cosine(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        answer = search(client, QUERY, threshold=0.95, k=10)
        assert_cosine(answer, 0.95)
        assert matches(answer) == ALICE  # about 0.96; every normalised score would be above 0.95
        assert matches(search(client, QUERY, threshold=0.99)) == set()


def test_normalisation_turned_off_ranks_by_cosine(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve(scoring={"score_normalization": False}) as client:
        # The cohort stays in the store, unused.
        assert cohort_status(client) == {
            "active": False,
            "enabled": False,
            "members": 1000,
            "size": 1000,
            "minimum": 900,
        }
        answer = search(client, QUERY, k=10)
        assert_cosine(answer, MATCH_THRESHOLD)
        assert matches(answer) == ALICE


def test_a_model_without_a_normalised_threshold_ranks_by_cosine(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    assert fake_embedder.normalized_threshold is None
    with serve() as client:
        assert client.get("/healthz").json()["embedder"]["normalized_threshold"] is None
        answer = search(client, QUERY, k=10)
        assert_cosine(answer, MATCH_THRESHOLD)
        assert matches(answer) == ALICE


def test_the_settings_normalised_threshold_comes_before_the_models(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve(scoring={"normalized_match_threshold": 30.0}) as client:
        answer = search(client, QUERY, k=10)
        assert_as_norm(answer, 30.0)
        assert matches(answer) == set()  # ~20: below this stricter threshold
    # Without any from the model, the setting's alone turns AS-norm on.
    fake_embedder.normalized_threshold = None
    with serve(scoring={"normalized_match_threshold": 5.0}) as client:
        answer = search(client, QUERY, k=10)
        assert_as_norm(answer, 5.0)
        assert matches(answer) == ALICE


def by_face(client: TestClient, face_id: int, **params: str | int | float) -> dict[str, Any]:
    response = client.post("/search", params={"face_id": face_id, "k": 10, **params})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def by_clip(client: TestClient, clip: bytes, **form: str) -> dict[str, Any]:
    response = client.post("/search", files={"video": ("q.mp4", clip, "video/mp4")}, data={"k": "10", **form})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_search_by_stored_face_follows_the_same_rules(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        [face] = images_named(client)["alice1.png"]["faces"]
        answer = by_face(client, face["id"])
        assert_as_norm(answer)
        # The face itself is no hit: Alice's other photo and her video person match.
        assert face["id"] not in [hit["face_id"] for hit in hits_of(answer)]
        assert matches(answer) == {("image", "alice2.png"), ("video", "stored.mp4")}
        assert_cosine(by_face(client, face["id"], threshold=0.9), 0.9)
    # The model's thresholds come from the embedder's health probe here: no photo was sent to it.
    fake_embedder.normalized_threshold = None
    with serve() as client:
        assert_cosine(by_face(client, face["id"]), MATCH_THRESHOLD)


def test_a_clip_query_follows_the_same_rules(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder, query_clip: bytes
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        answer = by_clip(client, query_clip)
        assert_as_norm(answer)
        assert len(answer["faces"]) == 1
        assert matches(answer) == ALICE
        with_threshold = by_clip(client, query_clip, threshold="0.9")
        assert_cosine(with_threshold, 0.9)
        assert matches(with_threshold) == ALICE
    fake_embedder.normalized_threshold = None
    with serve() as client:
        assert_cosine(by_clip(client, query_clip), MATCH_THRESHOLD)


def test_deletes_that_thin_the_cohort_below_its_minimum_turn_searches_back_to_cosine(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve(scoring={"cohort_check_interval_s": 0.02}) as client:
        assert search(client, QUERY)["score_kind"] == "as_norm"
        named = images_named(client)
        for number in range(3):  # 150 members gone
            assert client.delete(f"/images/{named[f'crowd{number}.png']['id']}").status_code == 204
        # Whatever the filler tops it up with (the few distinct faces outside it), it stays short of 900.
        status = cohort_status(client)
        assert not status["active"] and status["members"] < 900
        answer = search(client, QUERY, k=10)
        assert_cosine(answer, MATCH_THRESHOLD)
        assert matches(answer) == ALICE


def test_a_stored_face_search_with_the_services_threshold_needs_no_embedder_below_the_minimum(
    serve: Serve,
) -> None:
    with serve(match_threshold=0.5) as client:
        [alice, _, _] = post_images(client, *OTHERS)["images"]
    unreachable = {"url": "http://127.0.0.1:9"}
    with serve(match_threshold=0.5, embedder=unreachable) as client:
        answer = client.post("/search", params={"face_id": alice["faces"][0]["id"]})
        assert answer.status_code == 200, answer.text
        assert_cosine(answer.json(), 0.5)


def test_a_search_that_finds_no_candidates_answers_no_hits(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    """Nothing to re-rank (an empty collection, no stored video, a face alone in its collection)."""
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        for params in ({"collection": "nobody"}, {"source": "videos", "collection": "elsewhere"}):
            answer = search(client, QUERY, **params)
            assert answer["score_kind"] == "as_norm" and [face["hits"] for face in answer["faces"]] == [[]]
        [alone] = post_images(client, ("carol.png", photo("carol")), collection="elsewhere")["images"]
        response = client.post(
            "/search", params={"face_id": alone["faces"][0]["id"], "collection": "elsewhere"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["score_kind"] == "as_norm" and response.json()["faces"][0]["hits"] == []


def test_a_stored_face_search_with_the_embedder_down_uses_the_thresholds_it_has(
    populated: Path, serve: Serve, fake_embedder: FakeEmbedder
) -> None:
    """With the cohort full: the normalised threshold of the settings needs no embedder; the cosine
    one of the settings is used instead of the model's normalised one while the embedder is away."""
    fake_embedder.normalized_threshold = NORMALIZED_THRESHOLD
    with serve() as client:
        alice = images_named(client)["alice1.png"]
    face_id = alice["faces"][0]["id"]
    unreachable = {"url": "http://127.0.0.1:9"}
    with serve(embedder=unreachable, scoring={"normalized_match_threshold": 9.0}) as client:
        answer = client.post("/search", params={"face_id": face_id})
        assert answer.status_code == 200, answer.text
        assert_as_norm(answer.json(), 9.0)
    with serve(embedder=unreachable, match_threshold=0.5) as client:
        answer = client.post("/search", params={"face_id": face_id})
        assert answer.status_code == 200, answer.text
        assert_cosine(answer.json(), 0.5)
    with serve(embedder=unreachable) as client:  # no threshold known at all
        assert client.post("/search", params={"face_id": face_id}).status_code == 503


def test_the_openapi_schema_describes_the_score_kinds(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    response = schemas["SearchResponse"]
    assert "score_kind" in response["required"]
    assert response["properties"]["score_kind"]["enum"] == ["cosine", "as_norm"]
    hit = schemas["Hit"]["properties"]["normalized_score"]
    assert {option.get("type") for option in hit["anyOf"]} == {"number", "null"}
    assert "AS-norm" in hit["description"]
    assert "score_cohort" in schemas["Health"]["required"]
    assert set(schemas["CohortInfo"]["properties"]) == {"active", "enabled", "members", "size", "minimum"}
    assert "normalized_threshold" in schemas["EmbedderStatus"]["properties"]
