"""The public API over a fake embedder: ingest, search, read, delete, dedupe, docs, health."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.fakes import FakeEmbedder, photo


def ingest(client: TestClient, *photos: bytes, **form: str | list[str]) -> list[dict]:
    files = [("image", (f"p{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    response = client.post("/images", files=files, data=form)
    assert response.status_code == 200, response.text
    return response.json()["images"]


def search(client: TestClient, data: bytes, **params: str | int | float) -> dict:
    response = client.post("/search", files={"image": ("q.png", data, "image/png")}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


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
    assert result["threshold"] == 0.91


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


def test_several_photos_per_request_with_ids_and_metadata(client: TestClient) -> None:
    images = ingest(
        client,
        photo("fay"),
        photo("gus", "hal"),
        photo(),
        external_id=["a/fay.jpg", "b/gus.jpg", "c/empty.jpg"],
        metadata='{"album": "2024", "n": 3}',
    )
    assert [image["external_id"] for image in images] == ["a/fay.jpg", "b/gus.jpg", "c/empty.jpg"]
    assert [len(image["faces"]) for image in images] == [1, 2, 0]
    record = client.get(f"/images/{images[1]['id']}").json()
    assert record["metadata"] == {"album": "2024", "n": 3}
    assert [face["id"] for face in record["faces"]] == [face["id"] for face in images[1]["faces"]]
    assert record["content_type"] == "image/png" and record["width"] == 48


def test_the_same_photo_twice_is_recognised(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    data = photo("ida")
    [first] = ingest(client, data)
    [second, third] = ingest(client, data, data)
    assert second["duplicate"] and third["duplicate"]
    assert second["id"] == third["id"] == first["id"] and second["faces"] == first["faces"]
    assert fake_embedder.calls == [1]  # duplicates never reach the embedder
    [one, two] = ingest(client, photo("jo"), photo("jo"))
    assert not one["duplicate"] and two["duplicate"] and one["id"] == two["id"]
    [elsewhere] = ingest(client, data, collection="other")
    assert not elsewhere["duplicate"] and elsewhere["id"] != first["id"]
    listed = client.get("/images", params={"sha256": first["sha256"]}).json()
    assert [image["id"] for image in listed["images"]] == [first["id"], elsewhere["id"]]
    assert listed["next_after"] is None


def test_listing_pages_by_id(client: TestClient) -> None:
    ids = [image["id"] for image in ingest(client, *(photo("kim", variant=i) for i in range(5)))]
    page = client.get("/images", params={"limit": 3}).json()
    assert [image["id"] for image in page["images"]] == ids[:3]
    rest = client.get("/images", params={"limit": 3, "after": page["next_after"]}).json()
    assert [image["id"] for image in rest["images"]] == ids[3:] and rest["next_after"] is None


def test_file_comes_back_byte_for_byte(client: TestClient) -> None:
    data = photo("lea")
    [image] = ingest(client, data)
    response = client.get(f"/images/{image['id']}/file")
    assert response.status_code == 200
    assert response.content == data and response.headers["content-type"] == "image/png"


def test_delete_removes_from_search_at_once(client: TestClient) -> None:
    [gone, kept] = ingest(client, photo("max"), photo("max", variant=1))
    assert client.delete(f"/images/{gone['id']}").status_code == 204
    [face] = search(client, photo("max", variant=2))["faces"]
    assert [hit["id"] for hit in face["hits"]] == [kept["id"]]
    assert client.get(f"/images/{gone['id']}").status_code == 404
    assert client.get(f"/images/{gone['id']}/file").status_code == 404
    assert client.delete(f"/images/{gone['id']}").status_code == 404
    [again] = ingest(client, photo("max"))  # a deleted photo can come back, as a new photo
    assert not again["duplicate"] and again["id"] != gone["id"]


def test_collections_with_counts(client: TestClient) -> None:
    ingest(client, photo("ned"), photo("ola", "pia"))
    ingest(client, photo("ned"), collection="zoo")
    assert client.get("/collections").json() == {
        "collections": [
            {"name": "default", "images": 2, "videos": 0, "faces": 3},
            {"name": "zoo", "images": 1, "videos": 0, "faces": 1},
        ]
    }


def test_everything_survives_a_restart(make_settings: Callable[..., SearchSettings]) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        [image] = ingest(client, photo("quinn"))
        ingest(client, photo("rae"))
    with TestClient(create_app(settings)) as client:
        [face] = search(client, photo("quinn", variant=1), k=1)["faces"]
        assert face["hits"][0]["id"] == image["id"]
        assert client.get(f"/images/{image['id']}/file").content == photo("quinn")
        [again] = ingest(client, photo("quinn"))
        assert again["duplicate"]


def test_photos_go_to_the_embedder_in_batches(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    with TestClient(create_app(make_settings(embedder_batch_images=8))) as client:
        images = ingest(client, *(photo("sam", variant=i) for i in range(20)))
    assert fake_embedder.calls == [8, 8, 4]
    assert len({image["id"] for image in images}) == 20


def test_transient_embedder_failures_are_retried(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    fake_embedder.fail_next = [503, 502]
    [image] = ingest(client, photo("tia"))
    assert image["faces"]
    assert fake_embedder.calls == [1]


def test_health_metrics_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["embedder"] == {
        "url": health["embedder"]["url"],
        "ok": True,
        "model": "fake-embedder-v1",
        "dimension": 128,
        "error": None,
    }
    assert health["index"]["backend"] == "embedded" and health["index"]["ok"]
    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    spec = client.get("/openapi.json").json()
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations >= {
        ("/images", "post"),
        ("/images", "get"),
        ("/images/{image_id}", "get"),
        ("/images/{image_id}", "delete"),
        ("/images/{image_id}/file", "get"),
        ("/search", "post"),
        ("/collections", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    }
    search_doc = spec["paths"]["/search"]["post"]
    assert {"200", "413", "415", "422", "503"} <= set(search_doc["responses"])
    assert {p["name"] for p in search_doc["parameters"]} == {"k", "threshold", "collection", "source"}
    assert client.get("/docs").status_code == 200


def test_embedder_model_change_is_refused(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    with TestClient(create_app(make_settings(embedder_model_ttl_s=0))) as client:
        ingest(client, photo("uma"))
        fake_embedder.model = "another-model"
        response = client.post("/search", files={"image": ("q.png", photo("uma", variant=1), "image/png")})
        assert response.status_code == 409
        assert "fake-embedder-v1" in response.json()["detail"]
        assert "another-model" in response.json()["detail"]


def test_embedder_down_is_a_503_and_degraded_health(make_settings: Callable[..., SearchSettings]) -> None:
    # Port 9 (discard) has no listener here: connections are refused.
    settings = make_settings(embedder_url="http://127.0.0.1:9", embedder_retries=1)
    with TestClient(create_app(settings)) as client:
        response = client.post("/search", files={"image": ("q.png", photo("vic"), "image/png")})
        assert response.status_code == 503
        assert "embedder at http://127.0.0.1:9 unavailable" in response.json()["detail"]
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and not health.json()["embedder"]["ok"]
