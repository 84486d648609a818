"""``OpenSearchIndex``: the FaceIndex served by an OpenSearch cluster, one document per face.

The SQLite store stays the source of truth: ``open`` builds a missing index from it, rebuilds one
built from another store or with another mapping (``mapping.py``), and otherwise repairs the drift
(faces missing from the index, faces the store no longer has).

``add`` is one ``_bulk`` with ``refresh=wait_for``: it returns once the faces are searchable,
without forcing a refresh per call (forced refreshes make tiny segments, each with its own graph).
``remove_media`` is a ``_delete_by_query`` with ``refresh=true`` (that API takes no ``wait_for``),
so removed faces leave search before it returns.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import structlog
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

from search_service.domain import FaceBatch, Source
from search_service.errors import IndexUnavailableError
from search_service.index.base import (
    FaceIndex,
    FaceSource,
    IndexHealth,
    IndexHit,
    IndexMismatch,
    IndexState,
    checked_queries,
)
from search_service.index.opensearch import mapping, queries
from search_service.index.opensearch.cluster import Cluster
from search_service.settings import OpenSearchSettings

log = structlog.get_logger(__name__)

# Faces per store read and per id lookup while reconciling; also the id-scan page (<= MAX_K).
_PAGE = 10_000
# Values per `terms` query, well under index.max_terms_count (65,536 by default).
_TERMS_PER_QUERY = 10_000


class OpenSearchIndex(FaceIndex):
    name = "opensearch"
    max_k = queries.MAX_K

    def __init__(
        self,
        settings: OpenSearchSettings,
        *,
        dimension: int | None = None,
        bulk_chunk_docs: int = 500,
        connection_class: type[Connection] | None = None,
    ) -> None:
        """``dimension`` fixes the vector size up front; by default it comes from the first faces.
        ``bulk_chunk_docs`` bounds the documents per ``_bulk`` request while (re)building.
        ``connection_class`` replaces the HTTP connection (tests run an in-process cluster)."""
        self._settings = settings
        self._index = settings.index
        self._fixed_dimension = dimension
        self._chunk = bulk_chunk_docs
        self._cluster = Cluster(settings, connection_class)
        self._lock = threading.Lock()
        # Known once the index exists; None means no face was ever indexed (nothing to search).
        self._dimension: int | None = None
        self._store_id = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, source: FaceSource) -> None:
        self._store_id = source.store_id
        self._cluster.wait_until_up()
        with self._lock:
            state = self._read_state()
            if state is not None and self._must_rebuild(state):
                self._cluster.request(
                    "deleting the stale index", lambda c: c.indices.delete(index=self._index)
                )
                state = None
            if state is None:
                self._build(source)
            else:
                self._dimension = state.dimension
                self._repair(source)

    def close(self) -> None:
        self._cluster.close()

    def drop(self) -> None:
        self._cluster.wait_until_up()
        with self._lock:
            if self._read_state() is not None:  # IndexMismatch unless facesearch created it
                self._cluster.request("deleting the index", lambda c: c.indices.delete(index=self._index))
            self._dimension = None

    # -- writes ------------------------------------------------------------------------------

    def add(self, batch: FaceBatch) -> None:
        if len(batch) == 0:
            return
        with self._lock:
            if self._dimension is None:
                self._create(batch.dimension)
        # One request for the whole batch (byte limit permitting), so one wait for one refresh.
        self._cluster.bulk(
            self._documents(batch), action="adding faces", chunk=len(batch), refresh="wait_for"
        )

    def remove_media(self, media_ids: Sequence[int]) -> None:
        if not media_ids or self._dimension is None:
            return
        values = [str(int(media_id)) for media_id in media_ids]
        for start in range(0, len(values), _TERMS_PER_QUERY):
            self._remove_media_chunk(values[start : start + _TERMS_PER_QUERY])

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        collection: str | None = None,
        source: Source | None = None,
    ) -> list[list[IndexHit]]:
        rows = checked_queries(vectors, k, max_k=self.max_k, dimension=self._dimension)
        if self._dimension is None or len(rows) == 0:
            return [[] for _ in rows]
        body: list[dict[str, Any]] = []
        for row in rows:
            body += [{}, queries.knn_search(row, k, self._settings.ef_search, collection, source)]
        timeout = self._settings.timeout_s
        answer = self._cluster.request(
            "searching", lambda c: c.msearch(index=self._index, body=body, request_timeout=timeout)
        )
        return [queries.hits(self._index, response) for response in answer["responses"]]

    def count(self) -> int:
        if self._dimension is None:
            return 0
        return self._cluster.request("counting faces", self._count_documents)

    def health(self) -> IndexHealth:
        details: dict[str, Any] = {
            "index": self._index,
            "engine": mapping.ENGINE,
            "space_type": mapping.SPACE_TYPE,
        }
        # Per index once it exists: its shards are the ones searches need.
        scope = {} if self._dimension is None else {"index": self._index}
        timeout = self._settings.timeout_s
        # One attempt each, no retries: health reports the cluster as it is now, and quickly.
        try:
            cluster = self._cluster.once(
                "checking health", lambda c: c.cluster.health(**scope, request_timeout=timeout)
            )
            faces = 0
            if self._dimension is not None:
                faces = self._cluster.once("counting faces", self._count_documents)
        except (IndexUnavailableError, TransportError) as error:
            return IndexHealth(backend=self.name, ok=False, faces=0, details=details | {"error": str(error)})
        details |= {
            "cluster": cluster.get("cluster_name"),
            "status": cluster["status"],
            "dimension": self._dimension,
        }
        # Yellow (replicas unassigned) still answers every search; red has primaries missing.
        return IndexHealth(backend=self.name, ok=cluster["status"] != "red", faces=faces, details=details)

    # -- internals ---------------------------------------------------------------------------

    def _count_documents(self, client: OpenSearch) -> int:
        return int(client.count(index=self._index)["count"])

    def _remove_media_chunk(self, media_ids: list[str]) -> None:
        timeout = self._settings.bulk_timeout_s
        body = {"query": {"terms": {"media_id": media_ids}}}
        response = self._cluster.request(
            "removing faces",
            lambda c: c.delete_by_query(
                index=self._index,
                body=body,
                refresh=True,
                # A conflict means another request changed the same face meanwhile; a retried
                # (timed-out) delete meets the faces its first attempt already deleted.
                conflicts="proceed",
                request_timeout=timeout,
            ),
        )
        if response.get("failures") or response.get("timed_out"):
            failures = response.get("failures")
            raise IndexUnavailableError(f"OpenSearch removed the faces only partly: {failures}")

    def _check_dimension(self, dimension: int) -> None:
        if dimension != self._dimension:
            raise ValueError(f"vectors have {dimension} dimensions, the index {self._dimension}")

    def _create(self, dimension: int) -> None:
        """Create the index (caller holds the lock)."""
        body = mapping.create_body(self._settings, dimension, self._store_id)
        timeout = self._settings.bulk_timeout_s
        try:
            self._cluster.request(
                "creating the index",
                lambda c: c.indices.create(index=self._index, body=body, request_timeout=timeout),
            )
        except RequestError as error:
            # A retried create whose first attempt went through, or another handle was quicker:
            # use that index if it is exactly the one this call would have made.
            if error.error != "resource_already_exists_exception":
                raise
            state = self._read_state()
            wanted = mapping.wanted_state(self._settings, dimension, self._store_id)
            if state != wanted:
                raise IndexMismatch(
                    f"OpenSearch index {self._index!r} appeared meanwhile with {state}; expected {wanted}"
                ) from error
        self._dimension = dimension
        log.info("opensearch index created", index=self._index, dimension=dimension, engine=mapping.ENGINE)

    def _read_state(self) -> IndexState | None:
        try:
            response = self._cluster.request(
                "reading the index mapping", lambda c: c.indices.get_mapping(index=self._index)
            )
        except NotFoundError:
            return None
        return mapping.read_state(self._index, response)

    def _must_rebuild(self, state: IndexState) -> bool:
        if self._fixed_dimension is not None and state.dimension != self._fixed_dimension:
            raise IndexMismatch(
                f"OpenSearch index {self._index!r} holds {state.dimension}-d vectors, "
                f"{self._fixed_dimension}-d are configured: delete it or configure another index name"
            )
        if state.store_id != self._store_id:
            log.warning("opensearch index was built from another store: rebuilding", index=self._index)
            return True
        if state.fingerprint != mapping.fingerprint(self._settings, state.dimension):
            log.warning("opensearch index mapping differs from the code's: rebuilding", index=self._index)
            return True
        return False

    def _refresh(self) -> None:
        timeout = self._settings.bulk_timeout_s
        self._cluster.request(
            "refreshing", lambda c: c.indices.refresh(index=self._index, request_timeout=timeout)
        )

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
            for action in self._documents(batch)
        )
        loaded = self._cluster.bulk(actions, action="building the index", chunk=self._chunk, progress=True)
        # One refresh at the end instead of one per bulk request.
        self._refresh()
        log.info("opensearch index built", faces=loaded, seconds=round(time.monotonic() - started, 1))

    def _documents(self, batch: FaceBatch, rows: list[int] | None = None) -> Iterator[dict[str, Any]]:
        self._check_dimension(batch.dimension)
        return mapping.documents(self._index, batch, rows)

    def _repair(self, source: FaceSource) -> None:
        """Index the stored faces the index lacks, then delete the faces the store no longer has."""
        stored: list[np.ndarray] = []
        added = 0
        for batch in source.face_batches(_PAGE):
            ids = np.asarray(batch.face_ids, np.int64)
            stored.append(ids)
            present = self._indexed_among(ids)
            missing = [row for row, face_id in enumerate(ids) if int(face_id) not in present]
            if missing:
                added += self._cluster.bulk(
                    self._documents(batch, missing), action="repairing the index", chunk=self._chunk
                )
        store_ids = np.concatenate(stored) if stored else np.empty(0, np.int64)
        self._refresh()
        # Face ids are never reused, so once every stored face is in, the index holds more
        # documents than the store has faces exactly when some are stale.
        removed = 0
        if self.count() > len(store_ids):
            stale = np.setdiff1d(self._indexed_ids(), store_ids)
            deletes = ({"_op_type": "delete", "_index": self._index, "_id": str(i)} for i in stale)
            removed = self._cluster.bulk(
                deletes, action="removing stale faces", chunk=self._chunk, ignore_status=(404,)
            )
            self._refresh()
        log.info("opensearch index reconciled", faces=len(store_ids), added=added, removed=removed)

    def _indexed_among(self, face_ids: np.ndarray) -> set[int]:
        """Which of these faces the index holds; real-time (``_mget`` sees unrefreshed writes)."""
        body = {"ids": [str(face_id) for face_id in face_ids]}
        timeout = self._settings.bulk_timeout_s
        response = self._cluster.request(
            "looking up faces",
            lambda c: c.mget(index=self._index, body=body, _source=False, request_timeout=timeout),
        )
        return {int(doc["_id"]) for doc in response["docs"] if doc.get("found")}

    def _indexed_ids(self) -> np.ndarray:
        """Every face id in the index, paging in face id order (sorting on _id is disabled)."""
        ids: list[int] = []
        after: list[Any] | None = None
        while True:
            page = self._id_page(after)
            ids.extend(int(hit["_id"]) for hit in page)
            if len(page) < _PAGE:
                return np.asarray(ids, np.int64)
            after = page[-1]["sort"]

    def _id_page(self, after: list[Any] | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"size": _PAGE, "_source": False, "sort": [{"face_id": "asc"}]}
        if after is not None:
            body["search_after"] = after
        timeout = self._settings.bulk_timeout_s
        answer = self._cluster.request(
            "listing indexed faces", lambda c: c.search(index=self._index, body=body, request_timeout=timeout)
        )
        hits: list[dict[str, Any]] = answer["hits"]["hits"]
        return hits
