"""The embedded index: in-process, derived from the SQLite store, nothing else to run.

Faces are loaded from the store at start into an in-memory table (``columns.py``). Below
``HnswSettings.min_faces`` candidate faces a query is answered exactly (``exact.py``); from there
on by a faiss HNSW graph (``graph.py``), since exact search grows linearly with the set: the
measured crossover is in docs/decisions/index.md.

Building or catching up a graph runs in a background thread while exact search serves, so
start-up never waits for it. Deletes mark rows dead (HNSW cannot remove nodes); past
``max_dead_fraction`` the graph is rebuilt from the live faces, again in the background.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import structlog

from search_service.domain import FaceBatch, Source
from search_service.index.base import FaceIndex, FaceSource, IndexHealth, IndexHit, checked_queries
from search_service.index.embedded import graph as hnsw
from search_service.index.embedded.columns import SOURCE_CODES, CollectionCodes, FaceColumns
from search_service.index.embedded.exact import Eligible, search_exact
from search_service.settings import HnswSettings

log = structlog.get_logger(__name__)


@dataclass
class _GraphJob:
    """A graph being built or caught up off the lock; ``table`` is what the graph's nodes will be."""

    graph: faiss.Index
    table: FaceColumns
    # Rows of the live table the job's rows were copied from (None: the job extends the live
    # table), and how many rows the live table had then.
    positions: np.ndarray | None
    snapshot_n: int


class EmbeddedIndex(FaceIndex):
    name = "embedded"
    GRAPH_FILE = hnsw.GRAPH_FILE

    def __init__(self, directory: Path, settings: HnswSettings) -> None:
        self._directory = directory
        self._settings = settings
        self._store_id = ""
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._table: FaceColumns | None = None
        self._live = 0
        self._collections = CollectionCodes()
        self._eligible_cache: dict[tuple[int | None, int | None], Eligible] = {}
        self._graph: faiss.Index | None = None
        self._graph_dirty = False
        self._job_thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, source: FaceSource) -> None:
        faiss.omp_set_num_threads(self._settings.threads)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._store_id = source.store_id
        stored: FaceColumns | None = None
        for batch in source.face_batches():
            if stored is None:
                stored = FaceColumns(batch.dimension, max(len(batch), 1024))
            stored.append(FaceColumns.encode(batch, self._collections))
        with self._lock:
            self._table = stored
            self._live = stored.live_count() if stored is not None else 0
            job = self._adopt_saved_graph() if self._live >= self._settings.min_faces else None
            if job is not None:
                self._start_job(job)
            else:
                self._maybe_rebuild()
        log.info("embedded index open", faces=self._live, graph_job=self._job_thread is not None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._save_graph()

    def drop(self) -> None:
        self.wait_idle()
        with self._lock:
            self._table = None
            self._live = 0
            self._graph = None
            self._graph_dirty = False
            self._eligible_cache.clear()
        (self._directory / hnsw.GRAPH_FILE).unlink(missing_ok=True)

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
            if self._table is None:
                self._table = FaceColumns(batch.dimension)
            elif batch.dimension != self._table.dimension:
                raise ValueError(
                    f"vectors have {batch.dimension} dimensions, the index {self._table.dimension}"
                )
            self._table.append(FaceColumns.encode(batch, self._collections))
            self._live += len(batch)
            self._eligible_cache.clear()
            if self._graph is not None:
                self._graph.add(np.ascontiguousarray(batch.vectors, dtype=np.float32))
                self._graph_dirty = True
            self._maybe_rebuild()

    def remove_media(self, media_ids: Sequence[int]) -> None:
        with self._lock:
            table = self._table
            if table is None or not media_ids:
                return
            hit = (
                np.isin(table.media_ids[: table.n], np.asarray(media_ids, np.int64)) & table.alive[: table.n]
            )
            removed = int(np.count_nonzero(hit))
            if removed == 0:
                return
            table.alive[: table.n][hit] = False
            self._live -= removed
            self._eligible_cache.clear()
            # The graph keeps the dead nodes (and the saved node ids still name them), so the
            # saved graph stays valid: alignment at the next start marks them dead again.
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
        with self._lock:
            table = self._table
            # Under the lock: the dimension is the table's, which a rebuild may replace.
            dimension = table.dimension if table is not None else None
            queries = checked_queries(vectors, k, max_k=self.max_k, dimension=dimension)
            if table is None or self._live == 0:
                return [[] for _ in queries]
            eligible = self._eligible(table, collection, source)
            if eligible.count == 0:
                return [[] for _ in queries]
            k = min(k, eligible.count)
            if self._graph is not None and eligible.count >= self._settings.min_faces:
                positions, scores = hnsw.search_graph(
                    self._graph, queries, k, eligible, self._settings.ef_search
                )
                # HNSW under a selective filter can run out of candidates; exact search then
                # keeps the promise of k hits.
                short = (positions < 0).any(axis=1)
                if short.any():
                    positions[short], scores[short] = search_exact(table, queries[short], k, eligible)
            else:
                positions, scores = search_exact(table, queries, k, eligible)
            face_ids = table.face_ids[positions]
            media_ids = table.media_ids[positions]
        return [
            [IndexHit(int(f), int(m), float(s)) for f, m, s in zip(fs, ms, ss, strict=True)]
            for fs, ms, ss in zip(face_ids, media_ids, scores, strict=True)
        ]

    def count(self) -> int:
        return self._live

    def health(self) -> IndexHealth:
        with self._lock:
            nodes = self._table.n if self._table is not None else 0
            return IndexHealth(
                backend=self.name,
                ok=not self._closed,
                faces=self._live,
                details={
                    "mode": "hnsw" if self._graph is not None else "exact",
                    "graph_building": self._job_thread is not None and self._job_thread.is_alive(),
                    "dead_rows": nodes - self._live,
                    "hnsw_min_faces": self._settings.min_faces,
                },
            )

    # -- internals (callers hold self._lock unless noted) ------------------------------------

    def _eligible(self, table: FaceColumns, collection: str | None, source: Source | None) -> Eligible:
        key = (
            None if collection is None else self._collections.lookup(collection),
            None if source is None else SOURCE_CODES[source],
        )
        cached = self._eligible_cache.get(key)
        if cached is None:
            cached = self._eligible_cache[key] = Eligible.select(table, self._live, *key)
        return cached

    def _graph_stamp(self, dimension: int) -> dict[str, object]:
        return hnsw.stamp(self._store_id, dimension, self._settings)

    def _adopt_saved_graph(self) -> _GraphJob | None:
        """Take over the saved graph: a job when faces added since must still join it; None when
        it needs none, or when there is no usable graph (the caller then starts a build)."""
        table = self._table
        assert table is not None
        saved = hnsw.load(self._directory / hnsw.GRAPH_FILE, self._graph_stamp(table.dimension))
        if saved is None:
            return None
        graph, node_ids = saved
        self._table = hnsw.align(table, node_ids)
        self._eligible_cache.clear()
        if graph.ntotal == self._table.n:
            self._graph = graph
            return None
        return _GraphJob(graph, self._table, None, self._table.n)

    def _maybe_rebuild(self) -> None:
        """Start a background (re)build when the set got large enough or the graph too dead."""
        table = self._table
        if table is None or self._closed or (self._job_thread is not None and self._job_thread.is_alive()):
            return
        too_dead = table.n - self._live > self._settings.max_dead_fraction * table.n
        if self._live >= self._settings.min_faces and (self._graph is None or too_dead):
            live = table.live_positions()
            graph = hnsw.new_graph(table.dimension, self._settings)
            self._start_job(_GraphJob(graph, table.take(live), live, table.n))
        elif too_dead:
            # Below the threshold searches are exact and never touch the graph: drop it and
            # compact the table in place, which is cheap at this size.
            self._graph = None
            self._table = table.take(table.live_positions())
            self._eligible_cache.clear()

    def _start_job(self, job: _GraphJob) -> None:
        self._job_thread = threading.Thread(target=self._run_job, args=(job,), name="hnsw-build", daemon=True)
        self._job_thread.start()

    def _run_job(self, job: _GraphJob) -> None:
        """Thread body: bulk-add off the lock, then catch up with what changed meanwhile and swap."""
        try:
            # Rows below n are complete (append counts them last); later ones are caught up below.
            n = job.table.n
            job.graph.add(job.table.vectors[job.graph.ntotal : n])
            with self._lock:
                if self._closed or self._table is None:
                    return
                live = self._table
                if job.positions is not None:
                    job.table.alive[: len(job.positions)] = live.alive[job.positions]
                    job.table.append(live.columns(np.arange(job.snapshot_n, live.n)))
                job.graph.add(job.table.vectors[job.graph.ntotal : job.table.n])
                self._table = job.table
                self._live = job.table.live_count()
                self._graph = job.graph
                self._graph_dirty = True
                self._eligible_cache.clear()
            log.info("hnsw graph ready", nodes=job.graph.ntotal)
            self._save_graph()
        except Exception:
            # The index keeps serving exactly; the next change or restart retries the build.
            log.exception("hnsw graph build failed")

    def _save_graph(self) -> None:
        """Persist the graph if it changed since the last save. Takes the locks itself."""
        with self._save_lock:
            with self._lock:
                graph, table = self._graph, self._table
                if graph is None or table is None or not self._graph_dirty:
                    return
                # Serialized under the lock (a concurrent add would change it mid-copy); written
                # outside it, so searches wait for the copy only, not for the disk.
                graph_bytes = faiss.serialize_index(graph)
                node_ids = table.face_ids[: graph.ntotal].copy()
                graph_stamp = self._graph_stamp(table.dimension)
                self._graph_dirty = False
            hnsw.save(self._directory / hnsw.GRAPH_FILE, graph_bytes, node_ids, graph_stamp)
