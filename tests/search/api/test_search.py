"""Search by photo through the API: ranked hits per query face, the match threshold, filters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import ingest, search
from tests.search.fakes import MATCH_THRESHOLD, FakeEmbedder, photo


def test_ingest_then_find_the_person(client: TestClient) -> None:
    [alice] = ingest(client, photo("alice"), external_id="alice.png")
    ingest(client, *(photo(f"other{i}") for i in range(5)))
    assert alice["external_id"] == "alice.png" and not alice["duplicate"]
    [face] = alice["faces"]
    assert face["box"] == [2.0, 2.0, 10.0, 12.0]

    result = search(client, photo("alice", variant=1))
    [query_face] = result["faces"]
    best, *rest = query_face["hits"]
    assert best["id"] == alice["id"] and best["face_id"] == face["id"]
    assert (
        best["source"] == "image" and best["external_id"] == "alice.png" and best["collection"] == "default"
    )
    assert best["match"] and best["score"] > 0.9 and best["time_ranges"] is None
    assert best["box"] == face["box"]
    assert len(rest) == 5 and not any(hit["match"] for hit in rest)
    assert result["threshold"] == MATCH_THRESHOLD  # the embedder's model's own


def test_a_hit_names_its_file_and_size_as_its_record_does(client: TestClient) -> None:
    [alice] = ingest(client, photo("alice", size=(64, 48)))
    [best] = search(client, photo("alice", variant=1))["faces"][0]["hits"]
    record = client.get(f"/images/{alice['id']}").json()
    assert (best["filename"], best["width"], best["height"]) == ("p0.png", 64, 48)
    assert (best["filename"], best["width"], best["height"]) == (
        record["filename"],
        record["width"],
        record["height"],
    )


@pytest.mark.parametrize(("threshold", "match"), [(0.97, False), (0.5, True)])
def test_the_match_threshold_comes_from_the_embedders_answer(
    client: TestClient, fake_embedder: FakeEmbedder, threshold: float, match: bool
) -> None:
    ingest(client, photo("amy"))
    fake_embedder.match_threshold = threshold  # as if calibrated so for its model
    result = search(client, photo("amy", variant=1))  # scores ~0.96
    assert result["threshold"] == threshold
    assert result["faces"][0]["hits"][0]["match"] is match


def test_a_configured_threshold_overrides_the_models(
    make_settings: Callable[..., SearchSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEARCH_MATCH_THRESHOLD", "0.99")
    with TestClient(create_app(make_settings())) as client:
        ingest(client, photo("amy"))
        result = search(client, photo("amy", variant=1))
        assert result["threshold"] == 0.99
        assert not result["faces"][0]["hits"][0]["match"]  # ~0.96: a match at the model's 0.9, not at 0.99
        # ... and a request's own threshold overrides both.
        assert search(client, photo("amy", variant=1), threshold=0.5)["threshold"] == 0.5


def test_every_face_of_the_query_gets_its_own_hits(client: TestClient) -> None:
    stored = ingest(client, photo("ann"), photo("ben"), photo("cat"))
    [ann, ben] = search(client, photo("ann", "ben", variant=2), k=1)["faces"]
    assert [hit["id"] for hit in ann["hits"]] == [stored[0]["id"]]
    assert [hit["id"] for hit in ben["hits"]] == [stored[1]["id"]]
    assert ann["box"] != ben["box"]


def test_threshold_k_collection_and_source_as_query_or_form(client: TestClient) -> None:
    ingest(client, photo("dee"), collection="work")
    ingest(client, photo("dee", variant=1), photo("eli"), collection="home")
    query = photo("dee", variant=2)
    [face] = search(client, query, collection="work", k=5)["faces"]
    assert [hit["collection"] for hit in face["hits"]] == ["work"]
    response = client.post(
        "/search",
        files={"image": ("q.png", query, "image/png")},
        data={"collection": "home", "k": "1", "threshold": "0.999"},
    )
    [face] = response.json()["faces"]
    assert [(hit["collection"], hit["match"]) for hit in face["hits"]] == [("home", False)]
    assert response.json()["threshold"] == 0.999
    assert search(client, query, source="videos")["faces"][0]["hits"] == []
    assert len(search(client, query, source="images")["faces"][0]["hits"]) == 3


def test_blank_form_fields_mean_not_given(client: TestClient) -> None:
    """As browsers send an HTML form's empty inputs, and as FastAPI's Form() reads them."""
    ingest(client, photo("fay"))
    response = client.post(
        "/search",
        files={"image": ("q.png", photo("fay", variant=1), "image/png")},
        data={"k": "", "threshold": "", "collection": "", "source": ""},
    )
    assert response.status_code == 200, response.text
    assert response.json()["threshold"] == MATCH_THRESHOLD
    [face] = response.json()["faces"]
    assert face["hits"][0]["match"]


def test_searching_an_empty_store_finds_nothing(client: TestClient) -> None:
    [face] = search(client, photo("zed"))["faces"]
    assert face["hits"] == []
