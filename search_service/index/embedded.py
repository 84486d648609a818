"""The default index: in-process, derived from the SQLite store, nothing else to run.

Vectors are loaded from the store at start and kept in memory. Small sets (and small filtered
subsets) are searched exactly with one matrix product; at ``hnsw_min_faces`` and above a faiss
HNSW graph answers, because exact search grows linearly with the set (3-9 ms at 100k, ~63 ms at
1M on 2 cores; see ``SearchSettings.hnsw_min_faces`` for the measured crossover).

The graph is persisted under the data directory together with the face id of every node and a
stamp naming the store it was built from. At start it is reconciled with the store by face id:
nodes of faces deleted since are masked out, faces added since are appended. Building or catching
up a graph runs in a background thread while exact search serves, so start-up never waits for it.
Deletes mark nodes dead (HNSW cannot remove nodes); past ``max_dead_fraction`` the graph is
rebuilt from the live faces, again in the background.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import structlog

from search_service.index.base import SOURCES, FaceBatch, FaceIndex, FaceSource, IndexHealth, IndexHit, Source

log = structlog.get_logger(__name__)

_SOURCE_CODES: dict[Source, int] = {source: code for code, source in enumerate(SOURCES)}
_GRAPH_FORMAT = 1


class _Rows:
    """Growable column arrays, one row per face; row i is node i of the graph built over them."""

    _COLUMNS = ("face_ids", "media_ids", "sources", "collections", "alive", "vectors")

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        self.dimension = dimension
        self.n = 0
        self.face_ids = np.empty(capacity, np.int64)
        self.media_ids = np.empty(capacity, np.int64)
        self.sources = np.empty(capacity, np.int8)
        self.collections = np.empty(capacity, np.int32)
        self.alive = np.empty(capacity, bool)
        self.vectors = np.empty((capacity, dimension), np.float32)

    def _reserve(self, extra: int) -> None:
        needed = self.n + extra
        if needed <= len(self.face_ids):
            return
        capacity = max(needed, 2 * len(self.face_ids))
        for name in self._COLUMNS:
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), old.dtype)
            new[: self.n] = old[: self.n]
            # Readers holding the old array keep a valid (if shorter) view: only appends happen here.
            setattr(self, name, new)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        count = len(columns["face_ids"])
        self._reserve(count)
        for name in self._COLUMNS:
            getattr(self, name)[self.n : self.n + count] = columns[name]
        self.n += count

    def columns(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[positions] for name in self._COLUMNS}

    def take(self, positions: np.ndarray) -> _Rows:
        rows = _Rows(self.dimension, max(len(positions), 1024))
        rows.append(self.columns(positions))
        return rows

    def live_count(self) -> int:
        return int(np.count_nonzero(self.alive[: self.n]))


@dataclass
class _Eligible:
    """The rows a query may return under one filter; ``mask`` None means every row."""

    mask: np.ndarray | None
    count: int
    _bitmap: np.ndarray | None = None

    def bitmap(self) -> np.ndarray:
        # faiss.IDSelectorBitmap tests bit (i & 7) of byte (i >> 3): little-endian bit order.
        if self._bitmap is None:
            assert self.mask is not None
            self._bitmap = np.packbits(self.mask, bitorder="little")
        return self._bitmap


@dataclass
class _GraphJob:
    """A graph being built or caught up off the lock; ``rows`` is what the graph's nodes will be."""

    graph: faiss.Index
    rows: _Rows
    # Rows of the live table the job's rows were copied from (None: the job extends the live table),
    # and how many rows the live table had then.
    positions: np.ndarray | None
    snapshot_n: int


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest scores per row, best first."""
    n = scores.shape[1]
    if k < n:
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        top = np.broadcast_to(np.arange(n), scores.shape).copy()
    values = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


class EmbeddedIndex(FaceIndex):
    name = "embedded"
    GRAPH_FILE = "hnsw.npz"

    def __init__(
        self,
        directory: Path,
        *,
        hnsw_min_faces: int = 50_000,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        max_dead_fraction: float = 0.2,
        threads: int = 1,
    ) -> None:
        self._directory = directory
        self._hnsw_min_faces = hnsw_min_faces
        self._m = hnsw_m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._max_dead_fraction = max_dead_fraction
        self._threads = threads
        self._store_id = ""
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._rows: _Rows | None = None
        self._live = 0
        self._collection_codes: dict[str, int] = {}
        self._eligible_cache: dict[tuple[int | None, int | None], _Eligible] = {}
        self._graph: faiss.Index | None = None
        self._graph_dirty = False
        self._job_thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, source: FaceSource) -> None:
        faiss.omp_set_num_threads(self._threads)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._store_id = source.store_id
        stored: _Rows | None = None
        for batch in source.face_batches():
            if stored is None:
                stored = _Rows(batch.dimension, max(len(batch), 1024))
            stored.append(self._encode(batch))
        with self._lock:
            self._rows = stored
            self._live = stored.live_count() if stored is not None else 0
            job = self._reconcile_saved_graph() if self._live >= self._hnsw_min_faces else None
            if job is not None:
                self._start_job(job)
            else:
                self._maybe_rebuild()
        log.info("embedded index open", faces=self._live, graph_job=self._job_thread is not None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._save_graph()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for a background graph build; True when none is running (for tests and tools)."""
        thread = self._job_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- writes ------------------------------------------------------------------------------

    def add(self, batch: FaceBatch) -> None:
        if len(batch) == 0:
            return
        with self._lock:
            if self._rows is None:
                self._rows = _Rows(batch.dimension)
            elif batch.dimension != self._rows.dimension:
                raise ValueError(
                    f"vectors have {batch.dimension} dimensions, the index {self._rows.dimension}"
                )
            self._rows.append(self._encode(batch))
            self._live += len(batch)
            self._eligible_cache.clear()
            if self._graph is not None:
                self._graph.add(np.ascontiguousarray(batch.vectors, dtype=np.float32))
                self._graph_dirty = True
            self._maybe_rebuild()

    def remove_media(self, media_ids: Sequence[int]) -> None:
        with self._lock:
            rows = self._rows
            if rows is None or not media_ids:
                return
            hit = np.isin(rows.media_ids[: rows.n], np.asarray(media_ids, np.int64)) & rows.alive[: rows.n]
            removed = int(np.count_nonzero(hit))
            if removed == 0:
                return
            rows.alive[: rows.n][hit] = False
            self._live -= removed
            self._eligible_cache.clear()
            # The graph keeps the dead nodes (and the saved node ids still name them), so the
            # saved graph stays valid: reconciliation at start masks them again.
            self._maybe_rebuild()

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        collection: str | None = None,
        source: Source | None = None,
    ) -> list[list[IndexHit]]:
        if k < 1:
            raise ValueError("k must be at least 1")
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with self._lock:
            rows = self._rows
            if rows is None or self._live == 0:
                return [[] for _ in queries]
            if queries.shape[1] != rows.dimension:
                raise ValueError(f"query has {queries.shape[1]} dimensions, the index {rows.dimension}")
            eligible = self._eligible(rows, collection, source)
            if eligible.count == 0:
                return [[] for _ in queries]
            k = min(k, eligible.count)
            if self._graph is not None and eligible.count >= self._hnsw_min_faces:
                positions, scores = self._search_graph(self._graph, queries, k, eligible)
                # HNSW under a selective filter can run out of candidates; exact search then
                # guarantees the promised k hits.
                short = (positions < 0).any(axis=1)
                if short.any():
                    positions[short], scores[short] = self._search_exact(rows, queries[short], k, eligible)
            else:
                positions, scores = self._search_exact(rows, queries, k, eligible)
            face_ids = rows.face_ids[positions]
            media_ids = rows.media_ids[positions]
        return [
            [IndexHit(int(f), int(m), float(s)) for f, m, s in zip(fs, ms, ss, strict=True)]
            for fs, ms, ss in zip(face_ids, media_ids, scores, strict=True)
        ]

    def count(self) -> int:
        return self._live

    def health(self) -> IndexHealth:
        with self._lock:
            nodes = self._rows.n if self._rows is not None else 0
            return IndexHealth(
                backend=self.name,
                ok=not self._closed,
                faces=self._live,
                details={
                    "mode": "hnsw" if self._graph is not None else "exact",
                    "graph_building": self._job_thread is not None and self._job_thread.is_alive(),
                    "dead_rows": nodes - self._live,
                    "hnsw_min_faces": self._hnsw_min_faces,
                },
            )

    # -- internals (callers hold self._lock unless noted) ------------------------------------

    def _encode(self, batch: FaceBatch) -> dict[str, np.ndarray]:
        collections = np.empty(len(batch), np.int32)
        for i, name in enumerate(batch.collections):
            collections[i] = self._collection_codes.setdefault(name, len(self._collection_codes))
        return {
            "face_ids": np.asarray(batch.face_ids, np.int64),
            "media_ids": np.asarray(batch.media_ids, np.int64),
            "sources": np.fromiter((_SOURCE_CODES[s] for s in batch.sources), np.int8, len(batch)),
            "collections": collections,
            "alive": np.ones(len(batch), bool),
            "vectors": np.asarray(batch.vectors, np.float32),
        }

    def _eligible(self, rows: _Rows, collection: str | None, source: Source | None) -> _Eligible:
        collection_code = None if collection is None else self._collection_codes.get(collection, -1)
        source_code = None if source is None else _SOURCE_CODES[source]
        key = (collection_code, source_code)
        cached = self._eligible_cache.get(key)
        if cached is not None:
            return cached
        if collection_code is None and source_code is None and self._live == rows.n:
            eligible = _Eligible(None, rows.n)
        else:
            mask = rows.alive[: rows.n].copy()
            if collection_code is not None:
                mask &= rows.collections[: rows.n] == collection_code
            if source_code is not None:
                mask &= rows.sources[: rows.n] == source_code
            eligible = _Eligible(mask, int(np.count_nonzero(mask)))
        self._eligible_cache[key] = eligible
        return eligible

    @staticmethod
    def _search_exact(
        rows: _Rows, queries: np.ndarray, k: int, eligible: _Eligible
    ) -> tuple[np.ndarray, np.ndarray]:
        vectors = rows.vectors[: rows.n]
        if eligible.mask is None:
            return _top_k(queries @ vectors.T, k)
        if eligible.count * 4 < rows.n:
            # A small subset: gathering it is cheaper than scoring every row.
            candidates = np.flatnonzero(eligible.mask)
            top, scores = _top_k(queries @ vectors[candidates].T, k)
            return candidates[top], scores
        all_scores = queries @ vectors.T
        all_scores[:, ~eligible.mask] = -np.inf
        return _top_k(all_scores, k)

    def _search_graph(
        self, graph: faiss.Index, queries: np.ndarray, k: int, eligible: _Eligible
    ) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # absent from faiss's stubs
        params.efSearch = max(self._ef_search, k)
        if eligible.mask is not None:
            bitmap = eligible.bitmap()
            # faiss keeps a raw pointer: `bitmap` and `selector` must outlive the search call.
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params.sel = selector
        scores, positions = graph.search(queries, k, params=params)
        return positions, scores

    def _new_graph(self, dimension: int) -> faiss.Index:
        graph = faiss.IndexHNSWFlat(dimension, self._m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self._ef_construction
        return graph

    def _graph_stamp(self, dimension: int) -> dict[str, object]:
        return {"format": _GRAPH_FORMAT, "store_id": self._store_id, "dimension": dimension, "m": self._m}

    def _reconcile_saved_graph(self) -> _GraphJob | None:
        """Map the saved graph's nodes onto the stored faces; None when there is no usable graph."""
        rows = self._rows
        path = self._directory / self.GRAPH_FILE
        if rows is None or not path.exists():
            return None
        try:
            with np.load(path) as saved:
                stamp = json.loads(str(saved["stamp"]))
                node_ids = saved["face_ids"]
                graph_bytes = saved["graph"]
            if stamp != self._graph_stamp(rows.dimension):
                log.info("saved graph is stale: rebuilding", stamp=stamp)
                return None
            graph = faiss.deserialize_index(graph_bytes)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            log.warning("saved graph unreadable: rebuilding", error=str(error))
            return None
        if graph.ntotal != len(node_ids):
            log.warning("saved graph does not match its node ids: rebuilding")
            return None
        stored_ids = rows.face_ids[: rows.n]  # ascending: the store yields faces by id
        at = np.minimum(np.searchsorted(stored_ids, node_ids), rows.n - 1)
        found = stored_ids[at] == node_ids
        ordered = rows.take(at)
        ordered.face_ids[: ordered.n] = node_ids
        ordered.alive[: ordered.n] = found
        ordered.append(rows.columns(np.flatnonzero(~np.isin(stored_ids, node_ids))))
        self._rows = ordered
        self._eligible_cache.clear()
        log.info(
            "saved graph loaded",
            nodes=graph.ntotal,
            dead=int((~found).sum()),
            to_add=ordered.n - graph.ntotal,
        )
        if graph.ntotal == ordered.n:
            self._graph = graph
            self._maybe_rebuild()
            return None
        return _GraphJob(graph, ordered, None, ordered.n)

    def _maybe_rebuild(self) -> None:
        """Start a background (re)build when the set got large enough or the graph too dead."""
        rows = self._rows
        if rows is None or self._closed or (self._job_thread is not None and self._job_thread.is_alive()):
            return
        too_dead = rows.n - self._live > self._max_dead_fraction * rows.n
        if self._live >= self._hnsw_min_faces and (self._graph is None or too_dead):
            live = np.flatnonzero(rows.alive[: rows.n])
            self._start_job(_GraphJob(self._new_graph(rows.dimension), rows.take(live), live, rows.n))
        elif too_dead:
            # Below the threshold searches are exact and never touch the graph: drop it and
            # compact the rows in place, which is cheap at this size.
            self._graph = None
            self._rows = rows.take(np.flatnonzero(rows.alive[: rows.n]))
            self._eligible_cache.clear()

    def _start_job(self, job: _GraphJob) -> None:
        self._job_thread = threading.Thread(target=self._run_job, args=(job,), name="hnsw-build", daemon=True)
        self._job_thread.start()

    def _run_job(self, job: _GraphJob) -> None:
        """Thread body: bulk-add off the lock, then catch up with what changed meanwhile and swap."""
        try:
            # Rows up to n are complete (append writes before it counts); later ones come below.
            n = job.rows.n
            job.graph.add(job.rows.vectors[job.graph.ntotal : n])
            with self._lock:
                if self._closed or self._rows is None:
                    return
                live = self._rows
                if job.positions is not None:
                    job.rows.alive[: len(job.positions)] = live.alive[job.positions]
                    job.rows.append(live.columns(np.arange(job.snapshot_n, live.n)))
                job.graph.add(job.rows.vectors[job.graph.ntotal : job.rows.n])
                self._rows = job.rows
                self._live = job.rows.live_count()
                self._graph = job.graph
                self._graph_dirty = True
                self._eligible_cache.clear()
            log.info("hnsw graph ready", nodes=job.graph.ntotal)
            self._save_graph()
        except Exception:
            # The index keeps serving exactly; the next change or restart retries the build.
            log.exception("hnsw graph build failed")

    def _save_graph(self) -> None:
        """Write the graph atomically (temp file, fsync, rename). Takes the locks itself."""
        with self._save_lock:
            with self._lock:
                graph, rows = self._graph, self._rows
                if graph is None or rows is None or not self._graph_dirty:
                    return
                graph_bytes = faiss.serialize_index(graph)
                node_ids = rows.face_ids[: graph.ntotal].copy()
                stamp = json.dumps(self._graph_stamp(rows.dimension))
                self._graph_dirty = False
            path = self._directory / self.GRAPH_FILE
            temporary = path.with_suffix(".tmp")
            with open(temporary, "wb") as file:
                np.savez(file, graph=graph_bytes, face_ids=node_ids, stamp=np.array(stamp))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            log.info("hnsw graph saved", nodes=len(node_ids), path=str(path))
