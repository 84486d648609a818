"""The one Milvus collection a backend handle works on, and every request it sends about it:
created (with its indexes, then loaded), read back, written, counted, listed, flushed, dropped.

Callers that change the collection serialise themselves (``MilvusIndex`` holds a lock): Milvus
Lite takes one writer per collection at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import structlog
from pymilvus import MilvusClient, MilvusException

from search_service.domain import FaceBatch
from search_service.errors import IndexUnavailableError
from search_service.index.base import IndexMismatch, IndexState
from search_service.index.milvus import queries, schema
from search_service.index.milvus.server import COLLECTION_NOT_FOUND, COLLECTION_NOT_LOADED, MilvusServer
from search_service.settings import MilvusSettings

log = structlog.get_logger(__name__)

# Ids per lookup or delete expression, well under the server's limits on expressions and results.
IDS_PER_REQUEST = 1_000
# Rows per page when listing every face id (at most the server's 16,384).
LIST_PAGE = 10_000


def chunks(values: Sequence[int] | np.ndarray, size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield [int(value) for value in values[start : start + size]]


class Collection:
    def __init__(self, server: MilvusServer, settings: MilvusSettings) -> None:
        self.name = settings.collection
        self._server = server
        self._settings = settings

    # -- the collection itself ---------------------------------------------------------------

    def state(self) -> IndexState | None:
        """What the collection says about itself; None when there is none (IndexMismatch when
        facesearch did not make it)."""
        timeout = self._settings.timeout_s
        if not self._server.call("looking up the collection", "has_collection", self.name, timeout=timeout):
            return None
        description = self._server.call(
            "reading the collection", "describe_collection", self.name, timeout=timeout
        )
        return schema.read_state(self.name, description)

    def create(self, dimension: int, store_id: str) -> None:
        """Create the collection, its indexes, and load it."""
        timeout = self._settings.bulk_timeout_s
        try:
            self._server.call(
                "creating the collection",
                "create_collection",
                self.name,
                schema=schema.schema(dimension),
                consistency_level=schema.CONSISTENCY,
                properties=schema.properties(self._settings, store_id),
                timeout=timeout,
            )
        except MilvusException as error:
            # A retried create whose first attempt went through, or another handle was quicker
            # (a server accepts an identical create; Milvus Lite refuses it): use that collection
            # if it is exactly the one this call would have made.
            state = self.state()
            if state is None:
                raise
            wanted = schema.wanted_state(self._settings, dimension, store_id)
            if state != wanted:
                raise IndexMismatch(
                    f"Milvus collection {self.name!r} appeared meanwhile with {state}; expected {wanted}"
                ) from error
        self.make_ready()
        log.info("milvus collection created", collection=self.name, dimension=dimension)

    def make_ready(self) -> None:
        """Create the indexes the collection lacks (one request each), and load it if it is not.
        On a new, empty collection the indexes are ready at once, so pymilvus is not asked to poll
        for them (it sleeps half a second per index before its first look)."""
        timeout = self._settings.bulk_timeout_s
        existing = set(self._server.call("listing indexes", "list_indexes", self.name, timeout=timeout))
        for field in schema.INDEXED:
            if field not in existing:
                params = schema.index_params(self._settings, field)
                self._server.call(
                    "creating an index", "create_index", self.name, params, timeout=timeout, sync=False
                )
        loaded = self._server.call("reading the load state", "get_load_state", self.name, timeout=timeout)
        if str(loaded.get("state")) != "Loaded":
            self._server.call("loading the collection", "load_collection", self.name, timeout=timeout)

    def drop(self) -> None:
        timeout = self._settings.bulk_timeout_s
        self._server.call("dropping the collection", "drop_collection", self.name, timeout=timeout)
        log.info("milvus collection dropped", collection=self.name)

    def flush(self) -> None:
        """Seal the rows written so far into segments with their index, best effort. Milvus Lite
        searches rows it has not flushed without the index (about 0.1 s per 10,000 of them); a
        server seals segments by itself, so a refused flush (servers rate-limit them) only logs."""
        timeout = self._settings.bulk_timeout_s
        try:
            self._server.once("flushing", lambda c: c.flush(self.name, timeout=timeout))
        except (IndexUnavailableError, MilvusException) as error:
            log.warning("milvus flush failed; left to the server", collection=self.name, error=str(error))

    # -- rows --------------------------------------------------------------------------------

    def upsert(self, batch: FaceBatch, positions: list[int] | None, action: str) -> int:
        """Upsert these rows of the batch (all by default), ``insert_batch`` per request; an upsert
        names its face, so a retried request leaves one row per face."""
        chosen = list(range(len(batch))) if positions is None else positions
        timeout = self._settings.bulk_timeout_s
        for start in range(0, len(chosen), self._settings.insert_batch):
            rows = schema.rows(batch, chosen[start : start + self._settings.insert_batch])
            self._server.call(action, "upsert", self.name, rows, timeout=timeout)
        return len(chosen)

    def delete_media(self, media_ids: Sequence[int]) -> None:
        timeout = self._settings.bulk_timeout_s
        for chunk in chunks(media_ids, IDS_PER_REQUEST):
            expression = queries.media_filter(chunk)
            self._server.call("removing faces", "delete", self.name, filter=expression, timeout=timeout)

    def delete_faces(self, face_ids: np.ndarray) -> None:
        timeout = self._settings.bulk_timeout_s
        for chunk in chunks(face_ids, IDS_PER_REQUEST):
            self._server.call("removing stale faces", "delete", self.name, ids=chunk, timeout=timeout)

    # -- reads -------------------------------------------------------------------------------

    def read(self, action: str, send: Callable[[MilvusClient], Any]) -> Any:
        """A read of the collection; one dropped or released under us is unavailable until the
        next open, not a wrong request."""
        try:
            return self._server.request(action, send)
        except MilvusException as error:
            if error.code in (COLLECTION_NOT_FOUND, COLLECTION_NOT_LOADED):
                raise IndexUnavailableError(
                    f"Milvus could not read {self.name!r}: {error.message}"
                ) from error
            raise

    def count_rows(self, client: MilvusClient) -> int:
        answer = client.query(
            self.name,
            filter="",
            output_fields=["count(*)"],
            consistency_level=schema.CONSISTENCY,
            timeout=self._settings.timeout_s,
        )
        return int(answer[0]["count(*)"])

    def count(self) -> int:
        return int(self.read("counting faces", self.count_rows))

    def present(self, face_ids: np.ndarray) -> set[int]:
        """Which of these faces the collection holds."""
        found: set[int] = set()
        timeout = self._settings.bulk_timeout_s
        for chunk in chunks(face_ids, IDS_PER_REQUEST):
            answer = self._server.call(
                "looking up faces",
                "query",
                self.name,
                filter=queries.face_filter(chunk),
                output_fields=[schema.PRIMARY],
                limit=len(chunk),
                consistency_level=schema.CONSISTENCY,
                timeout=timeout,
            )
            found.update(int(row[schema.PRIMARY]) for row in answer)
        return found

    def face_ids(self) -> np.ndarray:
        """Every face id in the collection (one listing, retried whole)."""

        def listing(client: MilvusClient) -> list[int]:
            iterator = client.query_iterator(
                self.name,
                batch_size=LIST_PAGE,
                filter="",
                output_fields=[schema.PRIMARY],
                consistency_level=schema.CONSISTENCY,
                timeout=self._settings.bulk_timeout_s,
            )
            ids: list[int] = []
            try:
                while page := iterator.next():
                    ids.extend(int(row[schema.PRIMARY]) for row in page)
            finally:
                iterator.close()
            return ids

        return np.asarray(self._server.request("listing indexed faces", listing), np.int64)
