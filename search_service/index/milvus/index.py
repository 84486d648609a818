"""``MilvusIndex``: the FaceIndex served by Milvus (a server, or Milvus Lite in process), one row
per face.

The SQLite store stays the source of truth: ``open`` builds a missing collection from it,
rebuilds one built from another store, with another layout (``schema.py``) or for vectors of
another dimension, and otherwise repairs the drift (faces missing from the collection, faces the
store no longer has).

The collection is created with Strong consistency and every read asks for it, so ``add`` and
``remove_media`` are visible to the next search as soon as they return. Writes are upserts and
deletes by media id (``collection.py``), serialised per handle.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import structlog
from pymilvus import MilvusClient, MilvusException

from search_service.domain import FaceBatch, Source
from search_service.errors import IndexUnavailableError
from search_service.index.base import (
    FaceIndex,
    FaceSource,
    IndexHealth,
    IndexHit,
    IndexState,
    checked_queries,
)
from search_service.index.milvus import queries, schema
from search_service.index.milvus.collection import Collection
from search_service.index.milvus.server import ClientFactory, MilvusServer
from search_service.settings import MilvusSettings

log = structlog.get_logger(__name__)

# Faces per store read while building or reconciling.
_PAGE = 10_000


def _batches(first: FaceBatch | None, rest: Iterator[FaceBatch]) -> Iterator[FaceBatch]:
    return itertools.chain([] if first is None else [first], rest)


class MilvusIndex(FaceIndex):
    name = "milvus"
    max_k = queries.MAX_K

    def __init__(self, settings: MilvusSettings, *, client_factory: ClientFactory | None = None) -> None:
        """``client_factory`` replaces the client's construction (tests wrap it to inject failures)."""
        self._settings = settings
        self._server = MilvusServer(settings, client_factory)
        self._collection = Collection(self._server, settings)
        # Writes and creating or dropping the collection; searches never wait for it.
        self._lock = threading.Lock()
        # Known once the collection exists; None means no face was ever indexed (nothing to search).
        self._dimension: int | None = None
        self._store_id = ""
        self._unflushed = 0  # faces written since the last flush

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, source: FaceSource) -> None:
        self._store_id = source.store_id
        self._server.wait_until_up()
        with self._lock:
            state = self._collection.state()
            batches = source.face_batches(_PAGE)
            first = next(batches, None)
            if state is not None and self._must_rebuild(state, first):
                self._drop()
                state = None
            if state is None:
                self._build(first, batches)
            else:
                self._dimension = state.dimension
                self._collection.make_ready()  # after a crash between creating and loading it
                self._repair(_batches(first, batches))

    def close(self) -> None:
        self._server.close()

    def drop(self) -> None:
        self._server.wait_until_up()
        with self._lock:
            if self._collection.state() is not None:  # IndexMismatch if facesearch did not make it
                self._drop()

    # -- writes ------------------------------------------------------------------------------

    def add(self, batch: FaceBatch) -> None:
        if len(batch) == 0:
            return
        with self._lock:
            if self._dimension is None:
                self._collection.create(batch.dimension, self._store_id)
                self._dimension = batch.dimension
            self._upsert(batch, None, "adding faces")
            if self._unflushed >= self._settings.flush_every:
                self._flush()

    def remove_media(self, media_ids: Sequence[int]) -> None:
        if not media_ids or self._dimension is None:
            return
        with self._lock:
            self._collection.delete_media(media_ids)

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
        expression = queries.search_filter(collection, source)
        params = queries.search_params(self._settings.ef_search, k)
        timeout = self._settings.timeout_s

        def send(client: MilvusClient) -> Any:
            return client.search(
                self._collection.name,
                data=rows.tolist(),
                anns_field=schema.VECTOR,
                limit=k,
                filter=expression,
                output_fields=[schema.MEDIA],
                search_params=params,
                consistency_level=schema.CONSISTENCY,
                timeout=timeout,
            )

        return queries.hits(self._collection.read("searching", send))

    def count(self) -> int:
        return 0 if self._dimension is None else self._collection.count()

    def health(self) -> IndexHealth:
        name = self._collection.name
        details: dict[str, Any] = {
            "collection": name,
            "index_type": schema.VECTOR_INDEX,
            "metric_type": schema.METRIC,
            "dimension": self._dimension,
        }
        timeout = self._settings.timeout_s
        # One attempt each, no retries: health reports the server as it is now, and quickly.
        try:
            details["server"] = self._server.once(
                "checking health", lambda c: c.get_server_version(timeout=timeout)
            )
            faces = 0
            if self._dimension is not None:
                loaded = self._server.once(
                    "checking health", lambda c: c.get_load_state(name, timeout=timeout)
                )
                details["load_state"] = str(loaded.get("state"))
                faces = self._server.once("counting faces", self._collection.count_rows)
        except (IndexUnavailableError, MilvusException) as error:
            return IndexHealth(backend=self.name, ok=False, faces=0, details=details | {"error": str(error)})
        return IndexHealth(backend=self.name, ok=True, faces=faces, details=details)

    # -- internals (callers hold self._lock) -------------------------------------------------

    def _must_rebuild(self, state: IndexState, first: FaceBatch | None) -> bool:
        name = self._collection.name
        if state.store_id != self._store_id:
            log.warning("milvus collection was built from another store: rebuilding", collection=name)
            return True
        if state.fingerprint != schema.fingerprint(self._settings):
            log.warning("milvus collection layout differs from the code's: rebuilding", collection=name)
            return True
        if first is not None and first.dimension != state.dimension:
            log.warning(
                "milvus collection holds vectors of another dimension: rebuilding",
                collection=name,
                indexed=state.dimension,
                stored=first.dimension,
            )
            return True
        return False

    def _drop(self) -> None:
        self._collection.drop()
        self._dimension = None
        self._unflushed = 0

    def _upsert(self, batch: FaceBatch, positions: list[int] | None, action: str) -> int:
        if batch.dimension != self._dimension:
            raise ValueError(f"vectors have {batch.dimension} dimensions, the index {self._dimension}")
        written = self._collection.upsert(batch, positions, action)
        self._unflushed += written
        return written

    def _flush(self) -> None:
        self._collection.flush()
        self._unflushed = 0

    def _build(self, first: FaceBatch | None, rest: Iterator[FaceBatch]) -> None:
        if first is None:
            log.info(
                "milvus collection will be created with the first faces", collection=self._collection.name
            )
            return
        self._collection.create(first.dimension, self._store_id)
        self._dimension = first.dimension
        started = time.monotonic()
        loaded = sum(self._upsert(batch, None, "building the index") for batch in _batches(first, rest))
        self._flush()
        log.info("milvus collection built", faces=loaded, seconds=round(time.monotonic() - started, 1))

    def _repair(self, batches: Iterator[FaceBatch]) -> None:
        """Index the stored faces the collection lacks, then delete the faces the store no longer has."""
        stored: list[np.ndarray] = []
        added = 0
        for batch in batches:
            ids = np.asarray(batch.face_ids, np.int64)
            stored.append(ids)
            present = self._collection.present(ids)
            missing = [row for row, face_id in enumerate(ids) if int(face_id) not in present]
            if missing:
                added += self._upsert(batch, missing, "repairing the index")
        store_ids = np.concatenate(stored) if stored else np.empty(0, np.int64)
        # Face ids are never reused, so once every stored face is in, the collection holds more
        # rows than the store has faces exactly when some are stale.
        removed = 0
        if self._collection.count() > len(store_ids):
            stale = np.setdiff1d(self._collection.face_ids(), store_ids)
            self._collection.delete_faces(stale)
            removed = len(stale)
        if added or removed:
            self._flush()
        log.info("milvus collection reconciled", faces=len(store_ids), added=added, removed=removed)
