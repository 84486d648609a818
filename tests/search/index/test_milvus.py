"""The Milvus backend against Milvus Lite, in process: the shared conformance suite, then the
collection it creates, its filters and scores, its reconciliation with the store, and outages.

Milvus Lite (the ``milvus-lite`` package) serves pymilvus's API from a local ``.db`` folder; one
is shared by the module, each test on a collection of its own. The outage tests run a Lite server
of their own on a port, so that they can stop and restart it. The live counterpart, the same
suite against a real server, is ``test_milvus_live.py``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (in the test extra) is not installed")

from milvus_lite.adapter.grpc.server import start_server_in_thread
from pymilvus import MilvusClient, MilvusException

from search_service.domain import FaceBatch
from search_service.errors import IndexUnavailableError
from search_service.index.base import IndexMismatch
from search_service.index.milvus import MilvusIndex
from search_service.index.milvus import collection as milvus_collection
from search_service.index.milvus.queries import cosine, search_filter, string_literal
from search_service.index.milvus.server import connect, is_unavailable
from search_service.settings import MilvusSettings, SearchSettings
from tests.search.index.conformance import (
    DIMENSION,
    Gallery,
    IndexConformance,
    IndexFactory,
    MemorySource,
    assert_unavailable,
    unit_rows,
)

# No retries unless a test is about them: elsewhere a failure should show at its first request.
BASE = MilvusSettings(uri="unused.db", retries=0, connect_wait_s=0, timeout_s=2.0)


class FlakyClient:
    """A MilvusClient that records every call and fails the ones it is told to."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._failures: dict[str, list[BaseException]] = {}
        self._refused: dict[str, BaseException] = {}

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([error] * times)

    def refuse(self, method: str, error: BaseException) -> None:
        """Fail every call of ``method`` from now on."""
        self._refused[method] = error

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name in self._refused:
                raise self._refused[name]
            pending = self._failures.get(name)
            if pending:
                raise pending.pop(0)
            return attribute(*args, **kwargs)

        return call


class Lite:
    """A collection name on the module's Milvus Lite database, and handles on it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.collection = f"t_{uuid.uuid4().hex[:12]}"
        self.clients: list[FlakyClient] = []

    def settings(self, **update: Any) -> MilvusSettings:
        return BASE.model_copy(update={"uri": self.uri, "collection": self.collection, **update})

    def make(self, **update: Any) -> MilvusIndex:
        """A handle whose client is the latest FlakyClient (``self.flaky``); keywords are settings."""

        def factory(settings: MilvusSettings) -> Any:
            self.clients.append(FlakyClient(connect(settings)))
            return self.clients[-1]

        return MilvusIndex(self.settings(**update), client_factory=factory)

    @property
    def flaky(self) -> FlakyClient:
        return self.clients[-1]

    def raw(self) -> Any:
        """A plain client for looking at (and tampering with) the collection behind the backend."""
        return MilvusClient(self.uri)

    def ids(self) -> set[int]:
        rows = self.raw().query(self.collection, filter="", output_fields=["face_id"])
        return {int(row["face_id"]) for row in rows}


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "lite.db")


@pytest.fixture
def lite(lite_uri: str) -> Iterator[Lite]:
    lite = Lite(lite_uri)
    yield lite
    client = lite.raw()
    if client.has_collection(lite.collection):
        client.drop_collection(lite.collection)


class TestConformance(IndexConformance):
    """Rows that Milvus Lite has not flushed yet: searched without the HNSW index."""

    @pytest.fixture
    def make_index(self, lite: Lite) -> IndexFactory:
        return lite.make


class TestConformanceFlushed(IndexConformance):
    """Every add flushed: rows in sealed segments, searched through their HNSW graphs."""

    @pytest.fixture
    def make_index(self, lite: Lite) -> IndexFactory:
        return lambda: lite.make(flush_every=1)


@pytest.fixture
def gallery(lite: Lite) -> Iterator[Gallery]:
    gallery = Gallery(lite.make, lambda index: None)
    yield gallery
    gallery.close()


def created_indexes(client: FlakyClient) -> list[dict[str, Any]]:
    return [params.to_dict() for args, _ in client.called("create_index") for params in args[1]]


def reopen(gallery: Gallery, lite: Lite, **update: Any) -> None:
    """A new handle on the same collection and store, as after a restart (with other settings)."""
    gallery.index.close()
    gallery.index = lite.make(**update)
    gallery.index.open(gallery.source)


# -- settings and the registry ---------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file here
    environment = {
        "INDEX_BACKEND": "milvus",
        "MILVUS_URI": "https://milvus.example:19530",
        "SEARCH_MILVUS_TOKEN": "root:secret",
        "SEARCH_MILVUS_DB_NAME": "faces",
        "SEARCH_MILVUS_COLLECTION": "team_faces",
        "SEARCH_MILVUS_EF_SEARCH": "256",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SearchSettings()
    assert settings.index_backend == "milvus"
    milvus = settings.milvus
    assert (milvus.uri, milvus.db_name, milvus.collection, milvus.ef_search) == (
        "https://milvus.example:19530",
        "faces",
        "team_faces",
        256,
    )
    assert milvus.token is not None and milvus.token.get_secret_value() == "root:secret"
    assert "secret" not in repr(milvus)
    monkeypatch.delenv("MILVUS_URI")  # a Milvus Lite file: pymilvus itself takes only URLs there
    monkeypatch.setenv("SEARCH_MILVUS_URI", "data/milvus.db")
    assert SearchSettings().milvus.uri == "data/milvus.db"
    monkeypatch.setenv("SEARCH_MILVUS_COLLECTION", "faces-2")  # Milvus names allow no hyphen
    with pytest.raises(ValueError, match="collection"):
        SearchSettings()


def test_the_client_gets_token_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr("search_service.index.milvus.server.MilvusClient", lambda **kw: seen.append(kw))
    connect(BASE.model_copy(update={"uri": "http://m:19530", "token": SecretStr("u:p"), "db_name": "faces"}))
    connect(BASE.model_copy(update={"uri": "http://m:19530"}))
    assert seen == [
        {"uri": "http://m:19530", "timeout": 2.0, "dedicated": True, "token": "u:p", "db_name": "faces"},
        {"uri": "http://m:19530", "timeout": 2.0, "dedicated": True},
    ]


# -- the collection it creates ---------------------------------------------------------------


def test_creates_the_collection_with_the_first_faces(lite: Lite, gallery: Gallery) -> None:
    client = lite.raw()
    assert not client.has_collection(lite.collection)  # no faces yet: the dimension is unknown
    [media] = gallery.add(range(1), 1, collection="holiday", source="video")
    described = client.describe_collection(lite.collection)
    fields = {field["name"]: field for field in described["fields"]}
    assert list(fields) == ["face_id", "vector", "media_id", "source", "collection"]
    assert fields["face_id"]["is_primary"] and not described["auto_id"]
    assert fields["vector"]["params"]["dim"] == DIMENSION
    assert described["consistency_level_name"] == "Strong"
    assert described["properties"]["facesearch.store_id"] == "conformance-store"
    # What was asked for (Milvus Lite's describe_index leaves the HNSW parameters out).
    assert created_indexes(lite.flaky) == [
        {"field_name": "vector", "index_name": "vector", "index_type": "HNSW", "metric_type": "IP"}
        | {"M": 16, "efConstruction": 200},
        {"field_name": "media_id", "index_name": "media_id", "index_type": "INVERTED"},
        {"field_name": "source", "index_name": "source", "index_type": "INVERTED"},
        {"field_name": "collection", "index_name": "collection", "index_type": "INVERTED"},
    ]
    served = {field: client.describe_index(lite.collection, field) for field in ("vector", "media_id")}
    assert (served["vector"]["index_type"], served["vector"]["metric_type"]) == ("HNSW", "IP")
    assert served["media_id"]["index_type"] == "INVERTED"
    [row] = client.query(lite.collection, filter="", output_fields=["*"])
    stored = gallery.source.faces[1]
    assert {key: row[key] for key in ("face_id", "media_id", "source", "collection")} == {
        "face_id": 1,
        "media_id": media,
        "source": "video",
        "collection": "holiday",
    }
    np.testing.assert_array_equal(np.asarray(row["vector"], np.float32), stored.vector)


def test_search_sends_the_filter_inside_the_ann_request(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(10), 1)
    gallery.index.search(gallery.centers[:3], 5, collection="main", source="video")
    [(args, kwargs)] = lite.flaky.called("search")
    assert args == (lite.collection,)
    assert kwargs["filter"] == 'collection == "main" and source == "video"'
    assert (kwargs["limit"], kwargs["anns_field"], kwargs["consistency_level"]) == (5, "vector", "Strong")
    assert kwargs["search_params"] == {"metric_type": "IP", "params": {"ef": 128}}
    assert len(kwargs["data"]) == 3
    gallery.index.search(gallery.centers[:1], 300)
    assert lite.flaky.called("search")[-1][1]["search_params"]["params"] == {"ef": 300}  # ef >= k
    assert lite.flaky.called("search")[-1][1]["filter"] == ""


AWKWARD = [
    "it's",
    'say "cheese"',
    "back\\slash",
    'a\\"b',
    'x" or source == "image',
    "x' or '1' == '1",
    "two\nlines\r\n",
    "tab\there",
    "Zoë 🙂 日本",
    "",
]


def test_string_literals_escape_what_would_end_them() -> None:
    assert string_literal("plain") == '"plain"'
    assert string_literal('a"b\\c\nd\re') == '"a\\"b\\\\c\\nd\\re"'
    assert search_filter('x" or "1', "image") == 'collection == "x\\" or \\"1" and source == "image"'
    with pytest.raises(ValueError, match="source"):
        search_filter(None, "audio")  # type: ignore[arg-type]


def test_awkward_collection_names_filter_exactly(gallery: Gallery) -> None:
    gallery.add(range(0, 20), 1, collection="x")  # what an injection would reach
    gallery.add(range(20, 40), 1, collection="it")
    owned = {
        name: gallery.add(range(40 + 3 * i, 43 + 3 * i), 1, collection=name) for i, name in enumerate(AWKWARD)
    }
    for name, media in owned.items():
        [hits] = gallery.index.search(gallery.centers[:1], 100, collection=name)
        assert sorted(hit.media_id for hit in hits) == media, name
    assert gallery.index.search(gallery.centers[:1], 100, collection="x' or '1' == '") == [[]]


# -- scores ----------------------------------------------------------------------------------


def test_scores_are_the_cosine_similarity(lite: Lite) -> None:
    """Unit vectors at known angles from the query: every score is the cosine back, negative too."""
    similarities = np.linspace(-1, 1, 201, dtype=np.float32)
    vectors = np.stack([similarities, np.sqrt(1 - similarities**2)], axis=1).astype(np.float32)
    index = lite.make()
    index.open(MemorySource())
    ids = np.arange(1, 202)
    index.add(FaceBatch(ids, ids, ["image"] * 201, ["main"] * 201, vectors))
    [hits] = index.search(np.array([[1.0, 0.0]], np.float32), 201)
    assert len(hits) == 201
    back = {hit.face_id: hit.score for hit in hits}
    assert max(abs(back[i + 1] - float(similarities[i])) for i in range(201)) < 1e-6
    assert [hit.score for hit in hits] == sorted(back.values(), reverse=True)
    assert all(type(hit.score) is float for hit in hits) and cosine(-0.25) == -0.25
    index.close()


# -- writes ----------------------------------------------------------------------------------


def test_writes_are_upserts_in_batches(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(insert_batch=7), lambda index: None)
    gallery.add(range(10), 2)
    assert [len(args[1]) for args, _ in lite.flaky.called("upsert")] == [7, 7, 6]
    gallery.index.add(next(gallery.source.face_batches()))  # again: still one row per face
    assert gallery.index.count() == 20
    gallery.close()


def test_flushes_after_a_build_and_every_flush_every_faces(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(flush_every=25), lambda index: None)
    gallery.add(range(10), 2)
    assert not lite.flaky.called("flush")
    gallery.add(range(10, 15), 1)  # 25 faces since the collection was created
    assert len(lite.flaky.called("flush")) == 1
    lite.raw().drop_collection(lite.collection)
    reopen(gallery, lite)  # rebuilt from the store: one flush at the end
    assert len(lite.flaky.called("flush")) == 1 and len(lite.flaky.called("upsert")) == 1
    gallery.close()


def test_a_refused_flush_only_logs(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(flush_every=1), lambda index: None)
    gallery.add(range(2), 1)
    lite.flaky.fail_next("flush", MilvusException(code=8, message="rate limit exceeded"))
    gallery.add(range(2, 4), 1)
    assert gallery.index.count() == 4
    gallery.close()


def test_removing_more_media_than_one_request_takes(
    lite: Lite, gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milvus_collection, "IDS_PER_REQUEST", 7)  # 20 media: more than two requests' worth
    media = gallery.add(range(30), 1, faces_per_photo=2)  # one photo of each person, two faces in it
    gallery.remove(media[:20])
    assert lite.ids() == set(gallery.source.faces)
    hits = gallery.index.search(gallery.centers[:30], 60)
    found = {hit.media_id for person_hits in hits for hit in person_hits}
    assert found == set(media[20:])  # none of the removed photos' faces, every other face
    for person in range(20, 30):  # the ones left are still found as their person's best matches
        assert {hit.media_id for hit in hits[person][:2]} == {media[person]}


# -- reconciliation with the store -----------------------------------------------------------


def test_missing_collection_is_built_from_the_store(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(50), 2)
    lite.raw().drop_collection(lite.collection)
    reopen(gallery, lite)
    assert gallery.index.count() == 100
    assert lite.ids() == set(gallery.source.faces)
    [hits] = gallery.index.search(gallery.centers[7][None], 2)
    assert {gallery.person_of(hit.face_id) for hit in hits} == {7}


def test_drift_is_repaired_both_ways(lite: Lite, gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_collection, "IDS_PER_REQUEST", 7)  # lookups and deletes in several requests
    monkeypatch.setattr(milvus_collection, "LIST_PAGE", 25)  # the id listing in several pages
    gallery.add(range(40), 2)
    client = lite.raw()
    client.delete(lite.collection, ids=[3, 4, 5])  # in the store, not in the index
    [stray] = client.query(lite.collection, filter="face_id == 10", output_fields=["*"])
    strays = [stray | {"face_id": 1000 + i, "media_id": 999} for i in range(12)]  # not in the store
    client.upsert(lite.collection, strays)
    reopen(gallery, lite)
    assert lite.ids() == set(gallery.source.faces)
    assert gallery.index.count() == 80
    [hits] = gallery.index.search(gallery.source.faces[4].vector[None], 1)
    assert hits[0].face_id == 4


def test_restart_without_drift_writes_nothing(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(40), 2)
    gallery.index.close()

    def read_only(settings: MilvusSettings) -> Any:
        """A server that refuses every write (and not as an outage, so nothing retries)."""
        client = FlakyClient(connect(settings))
        for method in ("upsert", "insert", "delete", "create_collection", "drop_collection", "create_index"):
            client.refuse(method, MilvusException(code=1100, message=f"{method} refused: read-only"))
        return client

    gallery.index = MilvusIndex(lite.settings(), client_factory=read_only)
    gallery.index.open(gallery.source)  # would fail at its first write
    assert gallery.index.count() == 80
    assert lite.ids() == set(gallery.source.faces)
    [hits] = gallery.index.search(gallery.centers[7][None], 2)
    assert {gallery.person_of(hit.face_id) for hit in hits} == {7}


def test_collection_of_another_store_is_rebuilt(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(30), 2)
    gallery.source.store_id = "another-store"
    reopen(gallery, lite)
    assert lite.flaky.called("drop_collection")
    properties = lite.raw().describe_collection(lite.collection)["properties"]
    assert properties["facesearch.store_id"] == "another-store"
    assert gallery.index.count() == 60


def test_changed_layout_is_rebuilt(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(30), 2)
    reopen(gallery, lite, hnsw_m=24)
    assert lite.flaky.called("drop_collection")
    assert created_indexes(lite.flaky)[0]["M"] == 24
    assert gallery.index.count() == 60


def test_vectors_of_another_dimension_in_the_store_rebuild(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    for face in gallery.source.faces.values():
        face.vector = unit_rows(np.concatenate([face.vector, face.vector])[None])[0]
    reopen(gallery, lite)  # the store now holds 128-d vectors (another model)
    described = lite.raw().describe_collection(lite.collection)
    assert [f["params"]["dim"] for f in described["fields"] if f["name"] == "vector"] == [2 * DIMENSION]
    assert gallery.index.count() == 5


def test_a_collection_facesearch_did_not_create_is_left_alone(lite: Lite) -> None:
    lite.raw().create_collection(lite.collection, dimension=4)
    for attempt in (lambda index: index.open(MemorySource()), lambda index: index.drop()):
        with pytest.raises(IndexMismatch, match="not created by facesearch"):
            attempt(lite.make())
    assert lite.raw().has_collection(lite.collection)


def test_a_second_handle_adopts_the_collection_the_first_created(lite: Lite) -> None:
    gallery = Gallery(lite.make, lambda index: None)
    second = lite.make()
    second.open(gallery.source)  # no faces yet: neither handle has created the collection
    gallery.add(range(2), 1)
    second.add(next(gallery.source.face_batches()))  # Lite refuses its create: it adopts the collection
    assert second.count() == 2
    second.close()
    gallery.close()


def test_a_collection_of_another_store_appearing_meanwhile_is_refused(lite: Lite) -> None:
    ours = lite.make()
    ours.open(MemorySource(store_id="ours"))
    theirs = Gallery(lite.make, lambda index: None)  # the conformance store
    theirs.add(range(2), 1)
    with pytest.raises(IndexMismatch, match="appeared meanwhile"):
        ours.add(next(theirs.source.face_batches()))
    ours.close()
    theirs.close()


def test_drop_deletes_the_collection(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    gallery.index.drop()
    assert not lite.raw().has_collection(lite.collection)
    assert gallery.index.count() == 0
    gallery.index.drop()  # nothing left to drop: harmless


# -- outages ---------------------------------------------------------------------------------


def unavailable() -> MilvusException:
    return MilvusException(code=grpc.StatusCode.UNAVAILABLE, message="connection refused")


def test_errors_that_mean_not_now() -> None:
    assert is_unavailable(unavailable())
    assert is_unavailable(MilvusException(code=2, message="Fail connecting to server"))
    assert is_unavailable(MilvusException(code=8, message="rate limit exceeded"))
    assert is_unavailable(MilvusException(code=5, message="internal", retriable=True))
    assert not is_unavailable(MilvusException(code=1100, message="invalid parameter"))
    assert not is_unavailable(MilvusException(code=grpc.StatusCode.PERMISSION_DENIED, message="no"))
    assert not is_unavailable(ValueError("not a client error"))


class LiteServer:
    """Milvus Lite behind a gRPC port, as a real server is reached, that can go down and come back."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.start()

    def start(self) -> None:
        self._server, self._db, self.port = start_server_in_thread(str(self.data_dir), port=self.port)

    def stop(self) -> None:
        self._server.stop(grace=0).wait()
        self._db.close()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiteServer]:
    running = LiteServer(tmp_path / "server")
    yield running
    running.stop()


def test_server_down_and_back(server: LiteServer) -> None:
    lite = Lite(server.uri)
    gallery = Gallery(lambda: lite.make(timeout_s=1.0), lambda index: None)
    media = gallery.add(range(5), 1)
    server.stop()
    assert_unavailable(gallery, media, "unavailable")
    server.start()  # same port, same data: the client reconnects by itself (gRPC backs off ~1 s)
    gallery.index = lite.make(connect_wait_s=10)  # a restart of the service finds everything again
    gallery.index.open(gallery.source)
    assert gallery.index.health().ok
    assert gallery.index.count() == 6  # the failed add is repaired from the store
    gallery.close()


def test_open_fails_clearly_when_nothing_listens(server: LiteServer) -> None:
    port = server.port
    server.stop()
    index = MilvusIndex(BASE.model_copy(update={"uri": f"http://127.0.0.1:{port}", "connect_wait_s": 0.5}))
    with pytest.raises(IndexUnavailableError, match="unavailable while connecting"):
        index.open(MemorySource())
    server.start()


def booting_until(up_at: float) -> Callable[[MilvusSettings], Any]:
    """A client factory for a server that refuses connections, as while it boots, until ``up_at``
    (``time.monotonic()``), then answers."""

    def connect_when_up(settings: MilvusSettings) -> Any:
        if time.monotonic() < up_at:
            raise MilvusException(code=2, message="Fail connecting to server")
        return connect(settings)

    return connect_when_up


def test_open_waits_for_a_booting_server(lite: Lite) -> None:
    gallery = Gallery(lite.make, lambda index: None)
    gallery.add(range(5), 1)
    gallery.index.close()
    index = MilvusIndex(
        lite.settings(connect_wait_s=30, backoff_s=0.01), client_factory=booting_until(time.monotonic() + 0.5)
    )
    index.open(gallery.source)  # refused for half a second, then connected
    assert index.health().ok
    assert index.count() == 5
    [hits] = index.search(gallery.centers[3][None], 1)
    assert gallery.person_of(hits[0].face_id) == 3
    index.close()


def test_open_gives_up_on_a_server_that_never_boots(lite: Lite) -> None:
    index = MilvusIndex(
        lite.settings(connect_wait_s=0.5, backoff_s=0.01), client_factory=booting_until(math.inf)
    )
    started = time.monotonic()
    with pytest.raises(IndexUnavailableError, match="unavailable while connecting"):
        index.open(MemorySource())
    assert time.monotonic() - started < 10  # within connect_wait_s, give or take one attempt


def test_transient_errors_are_retried(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(retries=2, backoff_s=0.01), lambda index: None)
    gallery.add(range(5), 1)
    lite.flaky.fail_next("search", unavailable(), times=2)  # as many refusals as retries: ridden out
    [hits] = gallery.index.search(gallery.centers[:1], 3)
    assert {gallery.person_of(hit.face_id) for hit in hits[:1]} == {0} and len(hits) == 3
    lite.flaky.fail_next("upsert", unavailable(), times=2)
    gallery.add(range(5, 8), 1)
    assert lite.ids() == set(gallery.source.faces)
    lite.flaky.fail_next("search", unavailable(), times=3)  # one more than the budget: reported
    with pytest.raises(IndexUnavailableError, match="UNAVAILABLE"):
        gallery.index.search(gallery.centers[:1], 3)
    [hits] = gallery.index.search(gallery.centers[6][None], 1)  # and once it answers again, served
    assert gallery.person_of(hits[0].face_id) == 6
    gallery.close()


def test_a_refused_upsert_is_resent_whole(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(retries=1, backoff_s=0.01), lambda index: None)
    gallery.add(range(2), 1)  # creates the collection
    lite.flaky.fail_next("upsert", MilvusException(code=8, message="rate limit exceeded"))
    gallery.add(range(2, 7), 1)
    first, second = lite.flaky.called("upsert")[-2:]
    assert first == second
    assert gallery.index.count() == 7
    gallery.close()


def test_wrong_requests_are_not_retried(lite: Lite) -> None:
    gallery = Gallery(lambda: lite.make(retries=2), lambda index: None)
    gallery.add(range(5), 1)
    lite.flaky.fail_next("search", MilvusException(code=1100, message="invalid parameter"))
    # Refused once only: a retry would have been answered, so the error shows there was none.
    with pytest.raises(MilvusException, match="invalid parameter"):
        gallery.index.search(gallery.centers[:1], 3)
    gallery.close()


def test_a_collection_dropped_under_it_is_reported_not_hidden(lite: Lite, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    lite.raw().drop_collection(lite.collection)
    with pytest.raises(IndexUnavailableError, match="could not read"):
        gallery.index.search(gallery.centers[:1], 3)
    assert not gallery.index.health().ok
