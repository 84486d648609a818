"""The OpenSearch backend against an in-process cluster (``fake_opensearch``): the shared
conformance suite, then the requests it sends, its reconciliation with the store, and outages.

The live counterpart, the same suite against a real cluster, is ``test_opensearch_live.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import RequestError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from search_service.errors import IndexUnavailableError
from search_service.index.base import IndexMismatch
from search_service.index.opensearch import OpenSearchIndex
from search_service.index.opensearch.mapping import SPACE_TYPE
from search_service.index.opensearch.queries import cosine
from search_service.settings import OpenSearchSettings
from tests.search.index.conformance import (
    DIMENSION,
    Gallery,
    IndexConformance,
    IndexFactory,
    MemorySource,
    assert_unavailable,
)
from tests.search.index.fake_opensearch import SCORERS, FakeCluster, UnsupportedRequest, parse_body

INDEX = "faces-under-test"
EF_SEARCH = 32
# No retries unless a test is about them: elsewhere a failure should show at its first request.
SETTINGS = OpenSearchSettings().model_copy(
    update={
        "url": "http://opensearch.invalid:9200",
        "index": INDEX,
        "ef_search": EF_SEARCH,
        "retries": 0,
        "connect_wait_s": 0,
    }
)


def make(cluster: FakeCluster, *, dimension: int | None = None, **settings: Any) -> OpenSearchIndex:
    """A handle on the fake cluster; keywords override the test settings."""
    return OpenSearchIndex(
        SETTINGS.model_copy(update=settings), dimension=dimension, connection_class=cluster.connection_class
    )


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


class TestConformance(IndexConformance):
    @pytest.fixture
    def make_index(self, cluster: FakeCluster) -> IndexFactory:
        return lambda: make(cluster)


@pytest.fixture
def gallery(cluster: FakeCluster) -> Iterator[Gallery]:
    gallery = Gallery(lambda: make(cluster), lambda index: None)
    yield gallery
    gallery.close()


def reopen(gallery: Gallery, cluster: FakeCluster, **options: Any) -> None:
    """A new handle on the same cluster and store, as after a restart (with other options)."""
    gallery.index.close()
    gallery.index = make(cluster, **options)
    gallery.index.open(gallery.source)


def indexed_ids(cluster: FakeCluster) -> set[int]:
    return {int(i) for i in cluster.indices[INDEX].docs}


# -- the requests it sends -------------------------------------------------------------------


def test_creates_the_exact_mapping(cluster: FakeCluster, gallery: Gallery) -> None:
    assert not cluster.requests_to("PUT", INDEX)  # no faces yet: the dimension is unknown
    gallery.add(range(3), 1)
    [create] = cluster.requests_to("PUT", INDEX)
    meta = create.body["mappings"].pop("_meta")
    assert create.body == {
        "settings": {
            "index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "vector": {
                    "type": "knn_vector",
                    "dimension": DIMENSION,
                    "method": {
                        "name": "hnsw",
                        "engine": "lucene",
                        "space_type": "innerproduct",
                        "parameters": {"m": 16, "ef_construction": 128},
                    },
                },
                "face_id": {"type": "keyword"},
                "media_id": {"type": "keyword"},
                "source": {"type": "keyword"},
                "collection": {"type": "keyword"},
            },
        },
    }
    assert meta == {"facesearch": {"store_id": "conformance-store", "mapping": meta["facesearch"]["mapping"]}}


def test_documents_are_faces_under_their_id(cluster: FakeCluster, gallery: Gallery) -> None:
    [media] = gallery.add(range(1), 1, collection="holiday", source="video")
    face = gallery.source.faces[1]
    assert cluster.indices[INDEX].docs == {
        "1": {
            "face_id": 1,
            "media_id": media,
            "source": "video",
            "collection": "holiday",
            "vector": face.vector.tolist(),
        }
    }


def test_one_msearch_with_the_filter_inside_the_knn_clause(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(10), 1)
    cluster.requests.clear()
    queries = gallery.centers[:3]
    gallery.index.search(queries, 5, collection="main", source="video")
    [request] = cluster.requests
    assert (request.method, request.path) == ("POST", f"/{INDEX}/_msearch")
    assert request.body[0::2] == [{}, {}, {}]
    assert request.body[1] == {
        "size": 5,
        "_source": ["media_id"],
        "query": {
            "knn": {
                "vector": {
                    "vector": queries[0].tolist(),
                    "k": EF_SEARCH,
                    "filter": {
                        "bool": {"filter": [{"term": {"collection": "main"}}, {"term": {"source": "video"}}]}
                    },
                }
            }
        },
    }
    cluster.requests.clear()
    gallery.index.search(queries[:1], 50)
    [request] = cluster.requests
    assert request.body[1]["query"] == {"knn": {"vector": {"vector": queries[0].tolist(), "k": 50}}}
    assert request.body[1]["size"] == 50


def test_refresh_policy(cluster: FakeCluster, gallery: Gallery) -> None:
    media = gallery.add(range(700), 1)  # more than one default bulk chunk: still one request
    [bulk] = cluster.requests_to("POST", "/_bulk")
    assert bulk.params == {"refresh": "wait_for"}
    gallery.index.remove_media(media[:2])
    [delete] = cluster.requests_to("POST", "/_delete_by_query")
    assert delete.params == {"refresh": "true", "conflicts": "proceed"}
    assert delete.body == {"query": {"terms": {"media_id": [str(m) for m in media[:2]]}}}


def test_scores_convert_back_to_cosine_exactly() -> None:
    similarities = np.linspace(-1, 1, 2001, dtype=np.float32)
    query = np.array([1, 0], np.float32)
    vectors = np.stack([similarities, np.sqrt(1 - similarities**2)], axis=1).astype(np.float32)
    scores = SCORERS[SPACE_TYPE](query, vectors)
    back = np.array([cosine(float(s)) for s in scores])
    assert np.abs(back - similarities).max() < 2e-7


def test_negative_similarities_come_back_too(gallery: Gallery) -> None:
    gallery.add(range(20), 1)
    query = -gallery.centers[3]
    [hits] = gallery.index.search(query[None], 20)
    assert len(hits) == 20
    for hit in hits:
        assert hit.score == pytest.approx(float(gallery.source.faces[hit.face_id].vector @ query), abs=1e-6)
    assert min(hit.score for hit in hits) < -0.5


def test_re_adding_a_face_is_harmless(gallery: Gallery) -> None:
    gallery.add(range(5), 2)
    batch = next(gallery.source.face_batches())
    gallery.index.add(batch)
    assert gallery.index.count() == 10


def test_over_real_http(httpserver: HTTPServer) -> None:
    """The default urllib3 connection on a socket: headers, NDJSON bodies, statuses, keep-alive."""
    cluster = FakeCluster()

    def answer(request: Request) -> Response:
        body = parse_body(request.path, request.get_data() or None)
        status, payload = cluster.handle(request.method, request.path, dict(request.args), body)
        return Response(json.dumps(payload), status, content_type="application/json")

    httpserver.expect_request(re.compile("^/")).respond_with_handler(answer)
    url = httpserver.url_for("/")
    settings = SETTINGS.model_copy(update={"url": url})
    gallery = Gallery(lambda: OpenSearchIndex(settings), lambda index: None)
    try:
        media = gallery.add(range(20), 2, collection="a")
        gallery.add(range(20, 25), 2, collection="b")
        [hits] = gallery.index.search(gallery.centers[3][None], 3, collection="b")
        assert len(hits) == 3 and {gallery.source.faces[h.face_id].collection for h in hits} == {"b"}
        gallery.remove(media[:4])
        gallery.restart()
        assert gallery.index.count() == 46
        assert gallery.index.health().ok
    finally:
        gallery.close()
    httpserver.check_assertions()


# -- reconciliation with the store -----------------------------------------------------------


def test_missing_index_is_built_from_the_store(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(50), 2)
    del cluster.indices[INDEX]
    cluster.requests.clear()
    reopen(gallery, cluster)
    assert gallery.index.count() == 100
    assert indexed_ids(cluster) == set(gallery.source.faces)
    assert all(not r.params for r in cluster.requests_to("POST", "/_bulk"))  # one refresh at the end
    assert len(cluster.requests_to("POST", "/_refresh")) == 1
    [hits] = gallery.index.search(gallery.centers[7][None], 2)
    assert {gallery.person_of(hit.face_id) for hit in hits} == {7}


def test_drift_is_repaired_both_ways(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(40), 2)
    index = cluster.indices[INDEX]
    lost = [3, 4, 5]  # in the store, not in the index (say, an add that failed after the commit)
    for face_id in lost:
        del index.docs[str(face_id)]
    stray = index.docs["10"] | {"face_id": 999, "media_id": 999}  # in the index, not in the store
    index.docs["999"] = stray
    index.refresh()
    reopen(gallery, cluster)
    assert indexed_ids(cluster) == set(gallery.source.faces)
    assert gallery.index.count() == 80
    [hits] = gallery.index.search(np.stack([gallery.source.faces[4].vector]), 1)
    assert hits[0].face_id == 4


def test_restart_without_drift_writes_nothing(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(40), 2)
    cluster.requests.clear()
    reopen(gallery, cluster)
    assert not cluster.requests_to("POST", "/_bulk")
    assert not cluster.requests_to("POST", "/_search")


def test_index_of_another_store_is_rebuilt(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(30), 2)
    gallery.source.store_id = "another-store"
    cluster.requests.clear()
    reopen(gallery, cluster)
    assert cluster.requests_to("DELETE", INDEX)
    assert cluster.indices[INDEX].mappings["_meta"]["facesearch"]["store_id"] == "another-store"
    assert gallery.index.count() == 60


def test_changed_mapping_is_rebuilt(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(30), 2)
    reopen(gallery, cluster, hnsw_m=24)
    assert cluster.requests_to("DELETE", INDEX)
    assert cluster.indices[INDEX].mappings["properties"]["vector"]["method"]["parameters"]["m"] == 24
    assert gallery.index.count() == 60


def test_drop_deletes_only_its_own_index(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    gallery.index.drop()
    assert INDEX not in cluster.indices
    assert gallery.index.count() == 0
    gallery.index.drop()  # nothing left to drop: harmless
    cluster.put_index(INDEX, {"properties": {"title": {"type": "keyword"}}})
    with pytest.raises(IndexMismatch, match="not created by facesearch"):
        gallery.index.drop()
    assert INDEX in cluster.indices


def test_a_second_handle_adopts_the_index_the_first_created(cluster: FakeCluster) -> None:
    gallery = Gallery(lambda: make(cluster), lambda index: None)
    second = make(cluster)
    second.open(gallery.source)  # no faces yet: neither handle has created the index
    gallery.add(range(2), 1)
    second.add(next(gallery.source.face_batches()))  # its create is refused: it adopts the index
    assert second.count() == 2
    gallery.close()


def test_an_index_of_another_store_appearing_meanwhile_is_refused(cluster: FakeCluster) -> None:
    ours = make(cluster)
    ours.open(MemorySource(store_id="ours"))
    theirs = Gallery(lambda: make(cluster), lambda index: None)  # the conformance store
    theirs.add(range(2), 1)
    with pytest.raises(IndexMismatch, match="appeared meanwhile"):
        ours.add(next(theirs.source.face_batches()))
    theirs.close()


def test_an_index_facesearch_did_not_create_is_left_alone(cluster: FakeCluster) -> None:
    cluster.put_index(INDEX, {"properties": {"title": {"type": "keyword"}}})
    index = make(cluster)
    with pytest.raises(IndexMismatch, match="not created by facesearch"):
        index.open(MemorySource())
    assert INDEX in cluster.indices


def test_an_index_of_another_dimension_is_a_clear_error(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(3), 1)
    gallery.index.close()
    index = make(cluster, dimension=2 * DIMENSION)
    with pytest.raises(IndexMismatch, match=f"holds {DIMENSION}-d vectors"):
        index.open(gallery.source)
    assert INDEX in cluster.indices


def test_a_configured_dimension_creates_the_index_at_open(cluster: FakeCluster) -> None:
    index = make(cluster, dimension=DIMENSION)
    index.open(MemorySource())
    assert cluster.indices[INDEX].properties["vector"]["dimension"] == DIMENSION
    assert index.search(np.ones((2, DIMENSION), np.float32), 3) == [[], []]
    assert index.count() == 0


# -- outages ---------------------------------------------------------------------------------


def test_cluster_down(cluster: FakeCluster, gallery: Gallery) -> None:
    media = gallery.add(range(5), 1)
    cluster.down = True
    assert_unavailable(gallery, media, "unreachable")
    cluster.down = False
    assert gallery.index.health().ok
    assert gallery.index.count() == 5


def test_open_fails_clearly_when_the_cluster_stays_down(cluster: FakeCluster) -> None:
    cluster.down = True
    with pytest.raises(IndexUnavailableError, match="unreachable while connecting"):
        make(cluster).open(MemorySource())


def test_open_waits_for_a_booting_cluster(cluster: FakeCluster) -> None:
    cluster.refuse_next(2)  # connections refused while it boots, then it answers
    index = make(cluster, connect_wait_s=30)
    index.open(MemorySource())
    assert len(cluster.requests_to("GET", "/_cluster/health")) == 3
    assert index.health().ok


def test_open_gives_up_after_connect_wait(cluster: FakeCluster) -> None:
    cluster.down = True
    index = make(cluster, connect_wait_s=0.6)
    with pytest.raises(IndexUnavailableError, match="unreachable while connecting"):
        index.open(MemorySource())
    # Several attempts, backing off, none started after the wait was over.
    assert 2 <= len(cluster.requests_to("GET", "/_cluster/health")) <= 4


def test_transient_errors_are_retried(cluster: FakeCluster) -> None:
    gallery = Gallery(lambda: make(cluster, retries=2), lambda index: None)
    gallery.add(range(5), 1)
    cluster.requests.clear()
    cluster.fail_next(503, times=2)
    [hits] = gallery.index.search(gallery.centers[:1], 3)
    assert len(hits) == 3
    assert len(cluster.requests_to("POST", f"/{INDEX}/_msearch")) == 3  # two refused, one answered
    cluster.requests.clear()
    cluster.fail_next(503, times=3)
    with pytest.raises(IndexUnavailableError, match="503"):
        gallery.index.search(gallery.centers[:1], 3)
    assert len(cluster.requests_to("POST", f"/{INDEX}/_msearch")) == 3  # the first try and 2 retries
    gallery.close()


def test_a_rejected_bulk_is_resent_whole(cluster: FakeCluster) -> None:
    gallery = Gallery(lambda: make(cluster, retries=1), lambda index: None)
    gallery.add(range(2), 1)  # creates the index
    cluster.requests.clear()
    cluster.fail_next(429)  # the write queue is full
    gallery.add(range(2, 7), 1)
    first, second = cluster.requests_to("POST", "/_bulk")
    assert first.body == second.body
    assert gallery.index.count() == 7
    gallery.close()


def test_wrong_requests_are_not_retried(cluster: FakeCluster) -> None:
    gallery = Gallery(lambda: make(cluster, retries=2), lambda index: None)
    gallery.add(range(5), 1)
    cluster.requests.clear()
    cluster.fail_next(400)
    with pytest.raises(RequestError):  # the client's own verdict on a bad request, passed through
        gallery.index.search(gallery.centers[:1], 3)
    assert len(cluster.requests) == 1
    gallery.close()


def test_partial_results_are_refused(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    cluster.failed_shards = 1
    with pytest.raises(IndexUnavailableError, match="shards"):
        gallery.index.search(gallery.centers[:1], 3)


def test_red_cluster_is_unhealthy(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    cluster.status = "red"
    health = gallery.index.health()
    assert not health.ok and health.faces == 5 and health.details["status"] == "red"


def test_deleted_index_is_reported_not_hidden(cluster: FakeCluster, gallery: Gallery) -> None:
    gallery.add(range(5), 1)
    del cluster.indices[INDEX]
    with pytest.raises(IndexUnavailableError, match="no such index"):
        gallery.index.search(gallery.centers[:1], 3)


# -- the fake itself: it must refuse what it does not understand -----------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"size": 5, "query": {"knn": {"vector": {"vector": [0.0] * DIMENSION, "k": 5}}}, "post_filter": {}},
        {
            "size": 5,
            "query": {"bool": {"must": [{"knn": {"vector": {"vector": [0.0] * DIMENSION, "k": 5}}}]}},
        },
        {
            "size": 5,
            "query": {"knn": {"vector": {"vector": [0.0] * DIMENSION, "k": 5, "filter": {"match": {}}}}},
        },
        {"size": 5, "query": {"knn": {"vector": {"vector": [0.0] * DIMENSION, "num_candidates": 5}}}},
    ],
)
def test_fake_rejects_queries_it_does_not_understand(
    cluster: FakeCluster, gallery: Gallery, body: dict[str, Any]
) -> None:
    gallery.add(range(3), 1)
    client = OpenSearch(hosts=["http://opensearch.invalid:9200"], connection_class=cluster.connection_class)
    with pytest.raises(UnsupportedRequest):
        client.msearch(index=INDEX, body=[{}, body])


def test_fake_refuses_writes_that_would_auto_create_an_index(cluster: FakeCluster) -> None:
    client = OpenSearch(hosts=["http://opensearch.invalid:9200"], connection_class=cluster.connection_class)
    with pytest.raises(UnsupportedRequest, match="auto-create"):
        client.bulk(body=[{"index": {"_index": "elsewhere", "_id": "1"}}, {"face_id": 1}])
