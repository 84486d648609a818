"""Photos through the API over a fake embedder: ingest, read, list, download, delete, dedupe,
photos the embedder refuses among good ones, collections, and surviving a restart."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import ingest, search
from tests.search.fakes import FakeEmbedder, photo


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


def test_the_same_photo_twice_is_recognised(client: TestClient) -> None:
    data = photo("ida")
    [first] = ingest(client, data)
    [second, third] = ingest(client, data, data)
    assert second["duplicate"] and third["duplicate"]
    assert second["id"] == third["id"] == first["id"] and second["faces"] == first["faces"]
    [one, two] = ingest(client, photo("jo"), photo("jo"))  # twice in one request
    assert not one["duplicate"] and two["duplicate"] and one["id"] == two["id"]
    [elsewhere] = ingest(client, data, collection="other")
    assert not elsewhere["duplicate"] and elsewhere["id"] != first["id"]
    listed = client.get("/images", params={"sha256": first["sha256"]}).json()
    assert [image["id"] for image in listed["images"]] == [first["id"], elsewhere["id"]]
    assert listed["next_after"] is None


def test_a_duplicate_needs_no_embedder(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    data = photo("ida")
    [first] = ingest(client, data)
    fake_embedder.failing = True  # from here on, a request that reaches the embedder fails
    [again] = ingest(client, data)
    assert again["duplicate"] and again["id"] == first["id"] and again["faces"] == first["faces"]
    # The control: a photo the collection does not hold yet does need the embedder.
    response = client.post("/images", files={"image": ("new.png", photo("ida", variant=1), "image/png")})
    assert response.status_code == 502
    assert [image["id"] for image in client.get("/images").json()["images"]] == [first["id"]]


def test_refused_photos_fail_only_themselves(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    """One request: a good photo, text, another good photo, a photo over the embedder's pixel
    limit, the first photo again. The embedder refuses the batch; halving it names each culprit."""
    fake_embedder.max_pixels = 64 * 64
    first, second = photo("uli"), photo("vera")
    files = [
        ("image", ("uli.png", first, "image/png")),
        ("image", ("notes.png", b"no photo at all", "image/png")),
        ("image", ("vera.png", second, "image/png")),
        ("image", ("big.png", photo("wes", size=(65, 64)), "image/png")),
        ("image", ("uli-again.png", first, "image/png")),
    ]
    response = client.post("/images", files=files, data={"external_id": ["u", "n", "v", "b", "u2"]})
    assert response.status_code == 200
    uli, notes, vera, big, again = response.json()["images"]
    assert notes == {
        "id": None,
        "faces": [],
        "duplicate": False,
        "error": {"status": 415, "detail": "notes.png: cannot identify image file"},
    }
    assert big == {
        "id": None,
        "faces": [],
        "duplicate": False,
        "error": {
            "status": 413,
            "detail": "big.png: image too large: 65x64 = 4160 pixels, the limit is 4096",
        },
    }
    assert [uli["external_id"], vera["external_id"]] == ["u", "v"]
    assert not uli["duplicate"] and again["duplicate"] and again["id"] == uli["id"]
    assert client.get(f"/images/{vera['id']}/file").content == second
    listed = client.get("/images").json()["images"]
    assert [image["id"] for image in listed] == [uli["id"], vera["id"]]
    [face] = search(client, photo("vera", variant=1))["faces"]
    assert [hit["id"] for hit in face["hits"] if hit["match"]] == [vera["id"]]


def test_a_refused_photo_beside_a_duplicate_is_a_200(client: TestClient) -> None:
    """Nothing new stored, but the request was not all refused: the duplicate is answered."""
    [stored] = ingest(client, photo("xan"))
    response = client.post(
        "/images",
        files=[
            ("image", ("bad.png", b"no photo at all", "image/png")),
            ("image", ("xan.png", photo("xan"), "image/png")),
        ],
    )
    assert response.status_code == 200
    bad, again = response.json()["images"]
    assert bad["id"] is None and bad["error"] == {
        "status": 415,
        "detail": "bad.png: cannot identify image file",
    }
    assert again["duplicate"] and again["id"] == stored["id"]
    assert [image["id"] for image in client.get("/images").json()["images"]] == [stored["id"]]


def test_every_photo_refused_is_the_first_refusal(client: TestClient) -> None:
    """As before batches could fail in part: the status and detail of the first refused photo."""
    response = client.post(
        "/images",
        files=[
            ("image", ("notes.png", b"no photo at all", "image/png")),
            ("image", ("more.png", b"nor this", "image/png")),
        ],
    )
    assert response.status_code == 415
    assert response.json() == {"detail": "notes.png: cannot identify image file"}
    assert client.get("/images").json()["images"] == []


def test_listing_pages_by_id(client: TestClient) -> None:
    ids = [image["id"] for image in ingest(client, *(photo("kim", variant=i) for i in range(5)))]
    page = client.get("/images", params={"limit": 3}).json()
    assert [image["id"] for image in page["images"]] == ids[:3]
    rest = client.get("/images", params={"limit": 3, "after": page["next_after"]}).json()
    assert [image["id"] for image in rest["images"]] == ids[3:] and rest["next_after"] is None


def test_listing_filters_by_collection_and_external_id(client: TestClient) -> None:
    [work] = ingest(client, photo("liv"), collection="work", external_id="liv.png")
    ingest(client, photo("liv", variant=1), collection="home", external_id="liv.png")
    by_collection = client.get("/images", params={"collection": "work"}).json()["images"]
    assert [image["id"] for image in by_collection] == [work["id"]]
    both = client.get("/images", params={"external_id": "liv.png"}).json()["images"]
    assert len(both) == 2
    one = client.get("/images", params={"external_id": "liv.png", "collection": "work"}).json()["images"]
    assert [image["id"] for image in one] == [work["id"]]


def test_file_comes_back_byte_for_byte(client: TestClient) -> None:
    data = photo("lea")
    [image] = ingest(client, data)
    response = client.get(f"/images/{image['id']}/file")
    assert response.status_code == 200
    assert response.content == data and response.headers["content-type"] == "image/png"


def test_file_answers_a_range_and_refuses_one_past_the_end_in_json(client: TestClient) -> None:
    data = photo("lea")
    [image] = ingest(client, data)
    part = client.get(f"/images/{image['id']}/file", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == data[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(data)}"
    past = client.get(f"/images/{image['id']}/file", headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.json() == {"detail": "no byte of the Range lies in the file"}
    operation = client.get("/openapi.json").json()["paths"]["/images/{image_id}/file"]["get"]
    assert {"200", "206", "400", "404", "416"} <= set(operation["responses"])


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
