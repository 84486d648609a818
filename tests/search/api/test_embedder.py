"""What the service makes of the embedder's answers: batches within its limit, retries of "try
later" only (503, 429, transport failures, honouring Retry-After), a 500 relayed as a 502 at once,
its model checked on every answer, its embeddings checked against the dimension it declares.
Every failure of the whole request leaves nothing of it stored."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.api.helpers import assert_nothing_stored, ingest, post_images, search
from tests.search.fakes import MODEL, FakeEmbedder, photo


def test_photos_go_to_the_embedder_in_batches_within_its_limit(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.max_images_per_request = 8  # more photos in one call are a 413, as on the real one
    with TestClient(create_app(make_settings(embedder={"batch_images": 8}))) as client:
        images = ingest(client, *(photo("sam", variant=i) for i in range(20)))
        assert len({image["id"] for image in images}) == 20
        assert all(len(image["faces"]) == 1 for image in images)


def test_batches_over_the_embedders_limit_are_halved_until_they_fit(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    """Sent in batches larger than the embedder takes, a batch's refusal judges no photo: it is
    halved until the embedder takes each part, and every photo is stored."""
    fake_embedder.max_images_per_request = 5
    with TestClient(create_app(make_settings(embedder={"batch_images": 16}))) as client:
        images = ingest(client, *(photo("sam", variant=i) for i in range(20)))
        assert len({image["id"] for image in images}) == 20
        assert all(len(image["faces"]) == 1 for image in images)


def test_try_later_answers_are_retried(client: TestClient, fake_embedder: FakeEmbedder) -> None:
    fake_embedder.fail_next = [503, 429]
    [image] = ingest(client, photo("tia"))
    assert image["faces"]
    assert fake_embedder.fail_next == []  # both failures were answered before the success


def test_retry_after_is_honoured_up_to_its_cap(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.retry_after = "1"
    fake_embedder.fail_next = [503]
    with TestClient(create_app(make_settings())) as client:
        started = time.monotonic()
        ingest(client, photo("tia"))
        assert time.monotonic() - started >= 1.0  # backoff alone would have waited 0.01 s
    fake_embedder.retry_after = "3600"
    fake_embedder.fail_next = [503]
    with TestClient(create_app(make_settings(embedder={"retry_after_max_s": 0.2}))) as client:
        started = time.monotonic()
        ingest(client, photo("tia", variant=1))
        assert 0.2 <= time.monotonic() - started < 5


@pytest.mark.parametrize("status", [500, 502, 504])
def test_an_embedder_fault_is_a_502_at_once(
    client: TestClient, fake_embedder: FakeEmbedder, status: int
) -> None:
    """Asking again would only repeat a fault (row 2 of issue 10: a 500 was retried 3 times and
    relayed as a 503). Here a second attempt would have succeeded: the 502 shows there was none."""
    fake_embedder.fail_next = [status]
    answer = post_images(client, ("tia.png", photo("tia")))
    assert answer == {"status": 502, "detail": f"embedder answered {status}: answering {status} as told"}
    response = client.post("/search", files={"image": ("q.png", photo("tia"), "image/png")})
    assert response.status_code == 200  # the fault was that one answer's
    assert_nothing_stored(client)


def test_a_read_timeout_is_not_retried(
    make_settings: Callable[..., SearchSettings], fake_embedder: FakeEmbedder
) -> None:
    """The embedder took the work and was too slow: sending it again would double its load."""
    fake_embedder.delay_s = 1.0
    with TestClient(create_app(make_settings(embedder={"read_timeout_s": 0.3}))) as client:
        answer = post_images(client, ("tia.png", photo("tia")))
        assert answer["status"] == 503
        assert answer["detail"] == "the embedder is unavailable (1 attempt; last: ReadTimeout)"
        assert_nothing_stored(client)


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_an_embedder_verdict_on_a_photo_is_relayed_and_not_retried(
    client: TestClient, fake_embedder: FakeEmbedder, status: int
) -> None:
    """A 4xx judges the upload: asking again would not change it. Here the embedder would have
    accepted the photo on a second try; the client still gets the first verdict, with its status."""
    fake_embedder.fail_next = [status]
    answer = post_images(client, ("tia.png", photo("tia")))
    assert answer["status"] == status and answer["detail"] == f"tia.png: answering {status} as told"
    assert_nothing_stored(client)
    ingest(client, photo("tia"))  # the next request is answered normally


def test_the_embedder_out_of_order_is_a_502_and_stores_nothing(
    client: TestClient, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.failing = True
    answer = post_images(client, ("una.png", photo("una")), ("una2.png", photo("una", variant=1)))
    assert answer == {"status": 502, "detail": "embedder answered 500: the fake embedder is out of order"}
    assert_nothing_stored(client)


@pytest.mark.parametrize("route", ["/search", "/images"])
def test_a_model_change_is_refused_on_the_very_next_request(
    client: TestClient, fake_embedder: FakeEmbedder, route: str
) -> None:
    [stored] = ingest(client, photo("uma"))
    fake_embedder.model = "another-model"
    response = client.post(route, files={"image": ("q.png", photo("uma", variant=1), "image/png")})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert MODEL in detail and "another-model" in detail
    # Nothing of the refused request is stored, and the old model's data stays as it was.
    assert [image["id"] for image in client.get("/images").json()["images"]] == [stored["id"]]
    assert client.get("/collections").json()["collections"][0]["faces"] == 1
    fake_embedder.model = MODEL  # the model the store holds: answered again
    assert search(client, photo("uma", variant=1))["faces"][0]["hits"][0]["id"] == stored["id"]


def test_an_embedding_of_another_length_than_declared_is_a_502(
    client: TestClient, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.declared_dimension = 512  # its embeddings stay 128 long
    answer = post_images(client, ("vic.png", photo("vic")))
    assert answer["status"] == 502
    assert answer["detail"] == "embedder sent a 128-d embedding for a 512-d model"
    response = client.post("/search", files={"image": ("q.png", photo("vic"), "image/png")})
    assert response.status_code == 502
    assert_nothing_stored(client)
