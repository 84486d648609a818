"""The OpenSearch k-NN backend: the same FaceIndex, served by a cluster.

One OpenSearch index holds one document per face. This module creates it, so the mapping can
only be what the code says; a fingerprint of that mapping and the id of the store the index was
built from sit in the mapping's ``_meta``. The document id is the face id, so adding a face twice
is harmless. The SQLite store stays the source of truth: ``open`` builds a missing index from it,
rebuilds one built from another store or with another mapping, and otherwise repairs the drift
(faces missing from the index, faces the store no longer has).

Choices, and the OpenSearch documentation they rest on:

- Engine ``lucene`` (HNSW). Lucene and faiss both filter *inside* the k-NN search ("efficient
  filtering"), so k hits come back whenever k documents pass the filter. Lucene does it by
  construction since OpenSearch 2.4: a small filtered subset is searched exactly, otherwise the
  graph walk only accepts filtered documents and falls back to exact search once it has visited
  more vectors than the subset holds. Faiss reaches the same guarantee through an exact-search
  fallback that an index setting can switch off (docs: "Efficient k-NN filtering"). What faiss
  adds (quantisation, IVF, native memory) pays off at hundreds of millions of vectors.
- Space ``innerproduct`` on the unit vectors the embedder sends, which is cosine similarity. Its
  score is one formula for both engines and for exact and approximate search (docs: "Spaces",
  k-NN vector field types): ``score = 1 + ip`` when ``ip > 0``, else ``1 / (1 - ip)``; it
  inverts exactly (``cosine`` below). ``cosinesimil`` would score ``(1 + cos) / 2``, but that
  score has differed between releases and search paths (k-NN issue #2887, PR #2892). Lucene
  supports innerproduct from OpenSearch 2.13.
- ``add`` is one ``_bulk`` with ``refresh=wait_for``: it returns once the faces are searchable,
  without forcing a refresh per call (forced refreshes make tiny segments, each with its own
  graph). ``remove_media`` is a ``_delete_by_query`` with ``refresh=true`` (that API takes no
  ``wait_for``), so removed faces leave search before it returns.
- ``search`` sends one ``_msearch`` for all query faces. For lucene the knn clause's ``k`` is also
  the graph search's candidate list, so it asks for ``max(k, ef_search)`` candidates and keeps
  ``size = k`` hits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection
from opensearchpy.exceptions import ConnectionError as ClusterUnreachable
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError
from opensearchpy.helpers import BulkIndexError, streaming_bulk

from search_service.errors import ServiceError
from search_service.index.base import FaceBatch, FaceIndex, FaceSource, IndexHealth, IndexHit, Source

log = structlog.get_logger(__name__)

# The k-NN plugin's ceiling on k, and OpenSearch's default index.max_result_window for `size`.
MAX_K = 10_000
ENGINE = "lucene"
SPACE_TYPE = "innerproduct"
VECTOR_FIELD = "vector"
# Statuses that mean "not now" rather than "wrong request": overloaded, or a proxy or node down.
_UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})
# Bumped when the document layout changes in a way the mapping fingerprint cannot see.
_FORMAT = 1
# Set explicitly: when it is left unset, shards that go search-idle skip scheduled refreshes,
# which would hold a `refresh=wait_for` write until the next search arrives.
_REFRESH_INTERVAL = "1s"
# Faces per store read and per id lookup while reconciling; also the id-scan page (<= MAX_K).
_PAGE = 10_000
# Values per `terms` query, well under index.max_terms_count (65,536 by default).
_TERMS_PER_QUERY = 10_000
# Under the server's default http.max_content_length (100 MB), which rejects larger bulks.
_MAX_BULK_BYTES = 50 * 1024 * 1024
_PROGRESS_EVERY = 50_000


class IndexUnavailable(ServiceError):
    """OpenSearch cannot answer now (unreachable, overloaded, shards missing): a 503 for clients."""

    status_code = 503


class IndexMismatch(RuntimeError):
    """The OpenSearch index under the configured name cannot serve this store as it is."""


def cosine(score: float) -> float:
    """Cosine similarity of two unit vectors from OpenSearch's innerproduct score (module docs)."""
    return score - 1.0 if score > 1.0 else 1.0 - 1.0 / score


@contextmanager
def _unavailable_on_transient(action: str) -> Iterator[None]:
    """Turn the client's errors that mean "try later" into IndexUnavailable; let the rest through."""
    try:
        yield
    except ClusterUnreachable as error:  # includes timeouts, after the transport's own retries
        raise IndexUnavailable(f"OpenSearch unreachable while {action}: {error}") from error
    except TransportError as error:
        if error.status_code in _UNAVAILABLE_STATUSES:
            reason = f"{error.status_code} {error.error}"
            raise IndexUnavailable(f"OpenSearch failed {action}: {reason}") from error
        raise
    except BulkIndexError as error:
        statuses = {item.get("status") for failure in error.errors for item in failure.values()}
        if statuses & _UNAVAILABLE_STATUSES:
            raise IndexUnavailable(f"OpenSearch failed {action}: {error}") from error
        raise


@dataclass(frozen=True)
class _IndexState:
    """What an existing index says about itself in its mapping."""

    dimension: int
    store_id: str | None
    fingerprint: str | None


class OpenSearchIndex(FaceIndex):
    name = "opensearch"

    def __init__(
        self,
        url: str,
        *,
        index_name: str = "facesearch-faces",
        dimension: int | None = None,
        shards: int = 1,
        replicas: int = 0,
        hnsw_m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 128,
        timeout_s: float = 10.0,
        bulk_timeout_s: float = 120.0,
        retries: int = 2,
        connect_wait_s: float = 60.0,
        http_auth: tuple[str, str] | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        bulk_chunk_docs: int = 500,
        connection_class: type[Connection] | None = None,
    ) -> None:
        """``url``: one node, or several separated by commas; credentials may sit in the URL.

        ``dimension`` fixes the vector size up front; by default it comes from the first faces.
        ``connection_class`` replaces the HTTP connection (tests run an in-process cluster).
        """
        if not 1 <= ef_search <= MAX_K:
            raise ValueError(f"ef_search must be within 1..{MAX_K}")
        self._index = index_name
        self._fixed_dimension = dimension
        self._shards = shards
        self._replicas = replicas
        self._m = hnsw_m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._timeout = timeout_s
        self._bulk_timeout = bulk_timeout_s
        self._retries = retries
        self._connect_wait = connect_wait_s
        self._chunk = bulk_chunk_docs
        options: dict[str, Any] = {} if connection_class is None else {"connection_class": connection_class}
        # One client for the handle's life: it keeps a pool of keep-alive connections per node.
        # Retries go to the next node at once, on connection errors, timeouts and 502/503/504:
        # reads, writes that name their document ids and deletes are all safe to repeat.
        self._client = OpenSearch(
            hosts=[host.strip() for host in url.split(",") if host.strip()],
            timeout=timeout_s,
            max_retries=retries,
            retry_on_timeout=True,
            http_auth=http_auth,
            verify_certs=verify_certs,
            ca_certs=ca_certs,
            **options,
        )
        self._lock = threading.Lock()
        # Known once the index exists; None means no face was ever indexed (nothing to search).
        self._dimension: int | None = None
        self._store_id = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, source: FaceSource) -> None:
        self._store_id = source.store_id
        self._wait_for_cluster()
        with self._lock, _unavailable_on_transient("reconciling the index with the store"):
            state = self._read_state()
            if state is not None and self._must_rebuild(state):
                self._client.indices.delete(index=self._index)
                state = None
            if state is None:
                self._build(source)
            else:
                self._dimension = state.dimension
                self._repair(source)

    def close(self) -> None:
        self._client.close()

    # -- writes ------------------------------------------------------------------------------

    def add(self, batch: FaceBatch) -> None:
        if len(batch) == 0:
            return
        with _unavailable_on_transient("adding faces"):
            with self._lock:
                if self._dimension is None:
                    self._create(batch.dimension)
            self._bulk(self._actions(batch), refresh="wait_for", chunk=len(batch))

    def remove_media(self, media_ids: Sequence[int]) -> None:
        if not media_ids or self._dimension is None:
            return
        values = [str(int(media_id)) for media_id in media_ids]
        with _unavailable_on_transient("removing faces"):
            for start in range(0, len(values), _TERMS_PER_QUERY):
                response = self._client.delete_by_query(
                    index=self._index,
                    body={"query": {"terms": {"media_id": values[start : start + _TERMS_PER_QUERY]}}},
                    refresh=True,
                    # A conflict means another request changed the same face meanwhile; a retried
                    # (timed-out) delete meets the faces its first attempt already deleted.
                    conflicts="proceed",
                    request_timeout=self._bulk_timeout,
                )
                if response.get("failures") or response.get("timed_out"):
                    failures = response.get("failures")
                    raise IndexUnavailable(f"OpenSearch removed the faces only partly: {failures}")

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        collection: str | None = None,
        source: Source | None = None,
    ) -> list[list[IndexHit]]:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be within 1..{MAX_K}")
        queries = np.atleast_2d(np.asarray(vectors, np.float32))
        dimension = self._dimension
        if dimension is None or len(queries) == 0:
            return [[] for _ in queries]
        if queries.shape[1] != dimension:
            raise ValueError(f"query has {queries.shape[1]} dimensions, the index {dimension}")
        body: list[dict[str, Any]] = []
        for query in queries:
            body += [{}, self._query(query, k, collection, source)]
        with _unavailable_on_transient("searching"):
            responses = self._client.msearch(index=self._index, body=body, request_timeout=self._timeout)
        return [self._hits(response) for response in responses["responses"]]

    def count(self) -> int:
        if self._dimension is None:
            return 0
        with _unavailable_on_transient("counting faces"):
            return int(self._client.count(index=self._index)["count"])

    def health(self) -> IndexHealth:
        details: dict[str, Any] = {"index": self._index, "engine": ENGINE, "space_type": SPACE_TYPE}
        try:
            with _unavailable_on_transient("checking health"):
                # Per index once it exists: its shards are the ones searches need.
                scope = {} if self._dimension is None else {"index": self._index}
                cluster = self._client.cluster.health(**scope, request_timeout=self._timeout)
                faces = self.count()
        except (IndexUnavailable, TransportError) as error:
            return IndexHealth(backend=self.name, ok=False, faces=0, details=details | {"error": str(error)})
        details |= {
            "cluster": cluster.get("cluster_name"),
            "status": cluster["status"],
            "dimension": self._dimension,
        }
        # Yellow (replicas unassigned) still answers every search; red has primaries missing.
        return IndexHealth(backend=self.name, ok=cluster["status"] != "red", faces=faces, details=details)

    # -- internals ---------------------------------------------------------------------------

    def _wait_for_cluster(self) -> None:
        """At start the cluster may still be booting (compose starts everything at once)."""
        deadline = time.monotonic() + self._connect_wait
        while True:
            try:
                with _unavailable_on_transient("connecting"):
                    self._client.cluster.health(request_timeout=self._timeout)
                return
            except IndexUnavailable as error:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("waiting for OpenSearch", error=str(error), seconds_left=round(left))
                time.sleep(min(1.0, left))

    def _mapping(self, dimension: int) -> dict[str, Any]:
        return {
            # A field the code does not know about is a bug: refuse it instead of guessing a type.
            "dynamic": "strict",
            "properties": {
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": ENGINE,
                        "space_type": SPACE_TYPE,
                        "parameters": {"m": self._m, "ef_construction": self._ef_construction},
                    },
                },
                # Keyword: only ever matched exactly (terms, filters) or sorted for the id scan,
                # where numeric point fields would index ranges nobody asks for.
                "face_id": {"type": "keyword"},
                "media_id": {"type": "keyword"},
                "source": {"type": "keyword"},
                "collection": {"type": "keyword"},
            },
        }

    def _fingerprint(self, dimension: int) -> str:
        text = json.dumps([_FORMAT, self._mapping(dimension)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _create(self, dimension: int) -> None:
        """Create the index (caller holds the lock)."""
        meta = {"facesearch": {"store_id": self._store_id, "mapping": self._fingerprint(dimension)}}
        body = {
            "settings": {
                "index": {
                    "knn": True,
                    "number_of_shards": self._shards,
                    # The store can rebuild the index: replicas buy availability, not durability.
                    "number_of_replicas": self._replicas,
                    "refresh_interval": _REFRESH_INTERVAL,
                }
            },
            "mappings": self._mapping(dimension) | {"_meta": meta},
        }
        try:
            self._client.indices.create(index=self._index, body=body, request_timeout=self._bulk_timeout)
        except RequestError as error:
            # A retried create whose first attempt went through, or another handle was quicker:
            # use that index if it is exactly the one this call would have made.
            if error.error != "resource_already_exists_exception":
                raise
            state = self._read_state()
            wanted = _IndexState(dimension, self._store_id, self._fingerprint(dimension))
            if state != wanted:
                raise IndexMismatch(
                    f"OpenSearch index {self._index!r} appeared meanwhile with {state}; expected {wanted}"
                ) from error
        self._dimension = dimension
        log.info("opensearch index created", index=self._index, dimension=dimension, engine=ENGINE)

    def _read_state(self) -> _IndexState | None:
        try:
            response = self._client.indices.get_mapping(index=self._index)
        except NotFoundError:
            return None
        if len(response) != 1:
            raise IndexMismatch(f"{self._index!r} names {len(response)} OpenSearch indices; it must name one")
        mapping = next(iter(response.values()))["mappings"]
        meta = mapping.get("_meta", {}).get("facesearch")
        if meta is None:
            # Never delete what this service did not create.
            raise IndexMismatch(
                f"OpenSearch index {self._index!r} exists but was not created by facesearch; "
                "configure another index name"
            )
        dimension = int(mapping["properties"][VECTOR_FIELD]["dimension"])
        return _IndexState(dimension, meta.get("store_id"), meta.get("mapping"))

    def _must_rebuild(self, state: _IndexState) -> bool:
        if self._fixed_dimension is not None and state.dimension != self._fixed_dimension:
            raise IndexMismatch(
                f"OpenSearch index {self._index!r} holds {state.dimension}-d vectors, "
                f"{self._fixed_dimension}-d are configured: delete it or configure another index name"
            )
        if state.store_id != self._store_id:
            log.warning("opensearch index was built from another store: rebuilding", index=self._index)
            return True
        if state.fingerprint != self._fingerprint(state.dimension):
            log.warning("opensearch index mapping differs from the code's: rebuilding", index=self._index)
            return True
        return False

    def _build(self, source: FaceSource) -> None:
        batches = source.face_batches(_PAGE)
        first = next(batches, None)
        dimension = self._fixed_dimension or (first.dimension if first is not None else None)
        if dimension is None:
            log.info("opensearch index will be created with the first faces", index=self._index)
            return
        self._create(dimension)
        started = time.monotonic()
        actions = (
            action
            for batch in itertools.chain([] if first is None else [first], batches)
            for action in self._actions(batch)
        )
        loaded = self._bulk(actions, progress=True)
        self._client.indices.refresh(index=self._index, request_timeout=self._bulk_timeout)
        log.info("opensearch index built", faces=loaded, seconds=round(time.monotonic() - started, 1))

    def _repair(self, source: FaceSource) -> None:
        """Index the stored faces the index lacks, then delete the faces the store no longer has."""
        stored: list[np.ndarray] = []
        added = 0
        for batch in source.face_batches(_PAGE):
            ids = np.asarray(batch.face_ids, np.int64)
            stored.append(ids)
            # _mget is real-time: it sees documents written but not yet refreshed.
            response = self._client.mget(
                index=self._index,
                body={"ids": [str(face_id) for face_id in ids]},
                _source=False,
                request_timeout=self._bulk_timeout,
            )
            present = {int(doc["_id"]) for doc in response["docs"] if doc.get("found")}
            missing = [row for row, face_id in enumerate(ids) if int(face_id) not in present]
            if missing:
                added += self._bulk(self._actions(batch, missing))
        store_ids = np.concatenate(stored) if stored else np.empty(0, np.int64)
        self._client.indices.refresh(index=self._index, request_timeout=self._bulk_timeout)
        # Face ids are never reused, so once every stored face is in, the index holds more
        # documents than the store has faces exactly when some are stale.
        removed = 0
        if self.count() > len(store_ids):
            stale = np.setdiff1d(self._indexed_ids(), store_ids)
            deletes = ({"_op_type": "delete", "_index": self._index, "_id": str(i)} for i in stale)
            removed = self._bulk(deletes, ignore_status=(404,))
            self._client.indices.refresh(index=self._index, request_timeout=self._bulk_timeout)
        log.info("opensearch index reconciled", faces=len(store_ids), added=added, removed=removed)

    def _indexed_ids(self) -> np.ndarray:
        """Every face id in the index, paging in face id order (sorting on _id is disabled)."""
        ids: list[int] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": _PAGE, "_source": False, "sort": [{"face_id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            hits = self._client.search(index=self._index, body=body, request_timeout=self._bulk_timeout)
            page = hits["hits"]["hits"]
            ids.extend(int(hit["_id"]) for hit in page)
            if len(page) < _PAGE:
                return np.asarray(ids, np.int64)
            after = page[-1]["sort"]

    def _actions(self, batch: FaceBatch, rows: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
        if batch.dimension != self._dimension:
            raise ValueError(f"vectors have {batch.dimension} dimensions, the index {self._dimension}")
        vectors = np.asarray(batch.vectors, np.float32)
        for row in range(len(batch)) if rows is None else rows:
            face_id = int(batch.face_ids[row])
            yield {
                "_index": self._index,
                "_id": str(face_id),
                "_source": {
                    "face_id": face_id,
                    "media_id": int(batch.media_ids[row]),
                    "source": batch.sources[row],
                    "collection": batch.collections[row],
                    # float32 -> Python float is exact, and so is the server's parse back.
                    VECTOR_FIELD: vectors[row].tolist(),
                },
            }

    def _bulk(
        self,
        actions: Iterable[dict[str, Any]],
        *,
        refresh: str | None = None,
        chunk: int | None = None,
        ignore_status: tuple[int, ...] = (),
        progress: bool = False,
    ) -> int:
        """Send actions in chunks; returns how many succeeded. Item failures raise BulkIndexError."""
        done = 0
        extra: dict[str, Any] = {} if refresh is None else {"refresh": refresh}
        for ok, _ in streaming_bulk(
            self._client,
            actions,
            chunk_size=chunk or self._chunk,
            max_chunk_bytes=_MAX_BULK_BYTES,
            # 429: the node's write queue is full; the helper backs off and resends those items.
            max_retries=self._retries,
            initial_backoff=1,
            ignore_status=ignore_status,
            request_timeout=self._bulk_timeout,
            **extra,
        ):
            done += ok
            if progress and done % _PROGRESS_EVERY == 0 and ok:
                log.info("opensearch bulk load", faces=done)
        return done

    def _query(
        self, vector: np.ndarray, k: int, collection: str | None, source: Source | None
    ) -> dict[str, Any]:
        knn: dict[str, Any] = {"vector": vector.tolist(), "k": max(k, self._ef_search)}
        terms: list[dict[str, Any]] = []
        if collection is not None:
            terms.append({"term": {"collection": collection}})
        if source is not None:
            terms.append({"term": {"source": source}})
        if terms:
            # Inside the knn clause (efficient filtering), never beside it: a post-filter would
            # cut the k nearest down to fewer hits.
            knn["filter"] = {"bool": {"filter": terms}}
        return {"size": k, "_source": ["media_id"], "query": {"knn": {VECTOR_FIELD: knn}}}

    def _hits(self, response: dict[str, Any]) -> list[IndexHit]:
        error = response.get("error")
        if error is not None:
            kind = error.get("type") if isinstance(error, dict) else None
            reason = (error.get("reason") or kind) if isinstance(error, dict) else error
            if response.get("status") in _UNAVAILABLE_STATUSES or kind == "index_not_found_exception":
                raise IndexUnavailable(f"OpenSearch could not search {self._index!r}: {reason}")
            raise RuntimeError(f"OpenSearch rejected the search: {reason}")
        shards = response["_shards"]
        if shards.get("failed") or response.get("timed_out"):
            # Hits from some shards only: neither the k nearest nor k hits are guaranteed.
            raise IndexUnavailable(
                f"OpenSearch answered from {shards.get('successful')} of {shards.get('total')} shards"
            )
        return [
            IndexHit(int(hit["_id"]), int(hit["_source"]["media_id"]), cosine(hit["_score"]))
            for hit in response["hits"]["hits"]
        ]
