"""Query latency and recall of the vector search options against gallery size (1k to 1M faces).

One query at a time with k=20, as the search service asks: exact numpy (matrix-vector product and
partial sort), scikit-learn's NearestNeighbors (brute-force cosine, what the seed projects used),
and our :class:`EmbeddedIndex` forced to exact search and to its HNSW graph, with the service's
graph settings at several search breadths (recall against latency). HNSW graphs are slow to build
(1M: 11-13 minutes on both cores here; docs/decisions/index.md), so each is saved under the cache
folder by the index's own persistence and reused by later runs.

Beside them, up to ``MILVUS_LITE_MAX_SIZE`` faces, our :class:`MilvusIndex` on Milvus Lite (in
process, a pure-Python engine over faiss; not a Milvus server) with the service's Milvus settings,
built through the backend's own ``open`` (upserts, then a flush that builds the HNSW index).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from search_service.domain import FaceBatch, Source
from search_service.index.base import FaceIndex
from search_service.index.embedded import EmbeddedIndex
from search_service.settings import HnswSettings, SearchSettings
from tools.bench.gallery import RealEmbeddings, SyntheticGallery, hold_out_queries, neighbourhood_check
from tools.bench.recall import exact_top_k, match_recall, recall_at_k
from tools.bench.report import Comparison, Curve, Plot, Row, Section, number
from tools.bench.timing import Timing, time_calls

K = 20
NUMPY = "exact numpy"
SKLEARN = "sklearn brute cosine"
EMBEDDED_EXACT = "embedded exact"
EMBEDDED_HNSW = "embedded HNSW"
MILVUS_LITE = "milvus-lite HNSW"
BASELINES = (NUMPY, SKLEARN)
# Milvus Lite answers a query in milliseconds once its segments are indexed, but loads and indexes
# in Python: larger galleries do not fit a test run.
MILVUS_LITE_MAX_SIZE = 10_000

Search = Callable[[np.ndarray], np.ndarray]  # one query vector -> K gallery positions


@dataclass(frozen=True)
class IndexOptions:
    sizes: list[int]
    budget_s: float  # per method and size
    cache_dir: Path
    threshold: float
    build_threads: int
    max_hnsw_build: int | None  # larger graphs are only loaded from the cache, never built
    # HNSW search breadths to measure; the service's own setting is always among them.
    ef_search: list[int]


@dataclass
class MethodResult:
    method: str
    size: int
    timing: Timing | None = None
    recall: float | None = None
    match_recall: float | None = None
    build_s: float | None = None  # None: loaded from the cache, or nothing to build
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "size": self.size,
            "latency": self.timing.to_json() if self.timing else None,
            "recall_at_20": self.recall,
            "match_recall": self.match_recall,
            "build_s": self.build_s,
            "skipped": self.skipped,
        }


class _GallerySource:
    """A :class:`FaceSource` over an in-memory gallery: row i is face i + 1."""

    def __init__(self, vectors: np.ndarray, store_id: str) -> None:
        self._vectors = vectors
        self._store_id = store_id

    @property
    def store_id(self) -> str:
        return self._store_id

    def face_batches(self, batch_size: int = 10_000) -> Iterator[FaceBatch]:
        for start in range(0, len(self._vectors), batch_size):
            end = min(start + batch_size, len(self._vectors))
            ids = np.arange(start + 1, end + 1, dtype=np.int64)
            sources: list[Source] = ["image"] * (end - start)
            yield FaceBatch(ids, ids, sources, ["bench"] * (end - start), self._vectors[start:end])


class _Skip(Exception):
    """A measurement that cannot run in this mode; the message says why."""


def _index_search(index: FaceIndex) -> Search:
    def search(query: np.ndarray) -> np.ndarray:
        (hits,) = index.search(query[None, :], K)
        return np.array([hit.face_id - 1 for hit in hits], np.int64)

    return search


def hnsw_method(ef_search: int) -> str:
    return f"{EMBEDDED_HNSW} ef={ef_search}"


def milvus_method() -> str:
    return f"{MILVUS_LITE} ef={SearchSettings().milvus.ef_search}"


def _milvus_lite(vectors: np.ndarray) -> Iterator[tuple[str, Search | str, float | None]]:
    """Our Milvus backend on a Milvus Lite file in a temporary folder, or why it cannot run."""
    try:
        importlib.import_module("pymilvus")
        lite = importlib.import_module("milvus_lite.server_manager")
    except ImportError:
        yield (
            milvus_method(),
            "pymilvus and milvus-lite are not installed (pip install pymilvus milvus-lite)",
            None,
        )
        return
    from search_service.index.milvus import MilvusIndex

    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as directory:
        uri = str(Path(directory) / "lite.db")
        index = MilvusIndex(SearchSettings().milvus.model_copy(update={"uri": uri, "collection": "bench"}))
        started = time.perf_counter()
        index.open(_GallerySource(vectors, "bench-milvus"))
        build_s = time.perf_counter() - started
        yield milvus_method(), _index_search(index), build_s
        index.close()
        lite.server_manager_instance.release_server(uri)  # stop its in-process server before the folder goes


def _open_hnsw(
    vectors: np.ndarray, digest: str, options: IndexOptions, ef_search: int
) -> tuple[EmbeddedIndex, float | None]:
    """The HNSW index over ``vectors``, its graph loaded from the cache or built (and then saved)."""
    served = SearchSettings().hnsw
    name = f"{digest}-n{len(vectors)}-m{served.m}-efc{served.ef_construction}"
    directory = options.cache_dir / "hnsw" / name
    cached = (directory / EmbeddedIndex.GRAPH_FILE).is_file()
    if not cached and options.max_hnsw_build is not None and len(vectors) > options.max_hnsw_build:
        raise _Skip(f"no cached graph for {len(vectors):,} faces and building one is off in this mode")
    # The service's graph, searched at this breadth; always through the graph (min_faces 1).
    settings = served.model_copy(
        update={"min_faces": 1, "ef_search": ef_search, "threads": options.build_threads}
    )
    index = EmbeddedIndex(directory, settings)
    started = time.perf_counter()
    index.open(_GallerySource(vectors, f"bench-{name}"))
    index.wait_idle()
    build_s = None if cached else time.perf_counter() - started
    # The service searches with one thread per query: measure it that way.
    faiss.omp_set_num_threads(1)
    return index, build_s


def _methods(
    vectors: np.ndarray, digest: str, options: IndexOptions
) -> Iterator[tuple[str, Search | str, float | None]]:
    """(method, search function or the reason it is skipped, build seconds); one at a time, so
    that only one copy of a 1M gallery beyond ``vectors`` is alive."""

    def numpy_search(query: np.ndarray) -> np.ndarray:
        return exact_top_k(vectors, query, K)[0][0]

    yield NUMPY, numpy_search, None

    try:
        neighbors = importlib.import_module("sklearn.neighbors")
    except ImportError:
        yield SKLEARN, "scikit-learn is not installed (pip install scikit-learn)", None
    else:
        model = neighbors.NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(vectors)
        yield SKLEARN, lambda query: model.kneighbors(query[None, :], return_distance=False)[0], None
        del model

    with tempfile.TemporaryDirectory(prefix="bench-exact-") as directory:
        never_graph = HnswSettings().model_copy(update={"min_faces": len(vectors) + 1})
        exact = EmbeddedIndex(Path(directory), never_graph)
        exact.open(_GallerySource(vectors, "bench-exact"))
        yield EMBEDDED_EXACT, _index_search(exact), None
        exact.close()
    del exact

    for ef_search in options.ef_search:
        try:
            hnsw, build_s = _open_hnsw(vectors, digest, options, ef_search)
        except _Skip as reason:
            yield hnsw_method(ef_search), str(reason), None
        else:
            yield hnsw_method(ef_search), _index_search(hnsw), build_s
            hnsw.close()
            del hnsw

    if len(vectors) <= MILVUS_LITE_MAX_SIZE:
        yield from _milvus_lite(vectors)


def _run_queries(search: Search, queries: np.ndarray, budget_s: float) -> tuple[Timing, np.ndarray]:
    """Times the queries one at a time; returns the timing and the answers (rows of K positions,
    padded with -1), for the queries that fit in the budget."""
    for query in queries[:2]:
        search(query)  # first calls touch cold memory (a 1M graph was just loaded)
    answers: list[np.ndarray] = []
    timing = time_calls(
        lambda query: answers.append(search(query)), list(queries), warm_up=0, budget_s=budget_s
    )
    found = np.full((len(answers), K), -1, np.int64)
    for row, answer in enumerate(answers):
        found[row, : len(answer)] = answer
    return timing, found


def measure(gallery: SyntheticGallery, queries: np.ndarray, options: IndexOptions) -> list[MethodResult]:
    results = []
    for size in options.sizes:
        vectors = gallery.vectors(size)
        truth, truth_scores = exact_top_k(vectors, queries, K)
        for method, search, build_s in _methods(vectors, gallery.digest, options):
            if isinstance(search, str):
                results.append(MethodResult(method, size, skipped=search))
                continue
            timing, found = _run_queries(search, queries, options.budget_s)
            results.append(
                MethodResult(
                    method,
                    size,
                    timing,
                    recall_at_k(truth[: len(found)], found),
                    match_recall(truth[: len(found)], truth_scores[: len(found)], found, options.threshold),
                    build_s,
                )
            )
            print(f"  index {method} @ {size:,}: p50 {timing.median_ms:.3f} ms", file=sys.stderr, flush=True)
        del vectors
    return results


def _size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def _row(result: MethodResult, baselines: list[MethodResult | None], served: str) -> Row:
    label = f"{result.method} @ {_size_label(result.size)}"
    if result.timing is None:
        return Row("index", label, None, "", notes=f"skipped: {result.skipped}")
    median = result.timing.median_ms
    comparisons = [
        Comparison(b.method, f"{number(b.timing.median_ms)} ms", b.timing.median_ms / median)
        for b in baselines
        # The baselines are compared with ours, not with each other.
        if b is not None and b.timing is not None and result.method not in BASELINES
    ]
    notes = [f"recall@20 {result.recall:.4f}"]
    if result.match_recall is not None:
        notes.insert(0, f"match recall {result.match_recall:.4f}")
    if result.build_s is not None:
        rate = f"{result.size / result.build_s:,.0f} vectors/s"
        if result.method.startswith(MILVUS_LITE):
            notes.append(f"loaded and indexed in {result.build_s:.1f} s ({rate})")
        else:
            notes.append(f"graph built in {result.build_s:.0f} s ({rate})")
    row = Row(
        "index",
        label,
        median,
        "ms",
        f"p95 {number(result.timing.p95_ms)}",
        comparisons,
        notes=", ".join(notes),
    )
    if result.method == served and result.size >= 1_000_000:
        row.goal = "p50 ≤ 2 ms, match recall ≥ 0.99 at 1M"
        row.met = median <= 2.0 and (result.match_recall or 0.0) >= 0.99
    return row


def run(real: RealEmbeddings, query_count: int, options: IndexOptions) -> Section:
    """Holds out query photos, grows the gallery from the rest, measures every size and method."""
    query_rows = hold_out_queries(real.identities, query_count)
    keep = np.setdiff1d(np.arange(len(real.identities)), query_rows)
    gallery = SyntheticGallery(real.vectors[keep])
    check = neighbourhood_check(gallery, [real.identities[row] for row in keep], options.threshold)
    shares = ", ".join(f"{name} {value:.4f}" for name, value in check.items())
    print(
        f"index gallery: {len(keep)} real faces, then rotated copies; {len(query_rows)} queries; {shares}",
        file=sys.stderr,
    )
    results = measure(gallery, real.vectors[query_rows], options)
    description = {
        "real_faces": len(keep),
        "queries": len(query_rows),
        "scheme": {
            "name": "rotated copies",
            "band": gallery.band,
            "keep": gallery.keep,
            "seed": gallery.seed,
        },
        "digest": gallery.digest,
        "check_at_match_threshold": check,
    }
    return section(results, options.threshold, description)


def section(results: list[MethodResult], threshold: float, gallery: dict[str, Any]) -> Section:
    """The table rows, key figures and latency plot; ``gallery`` describes how the gallery was made."""
    out = Section()
    hnsw = SearchSettings().hnsw
    served = hnsw_method(hnsw.ef_search)
    by_key = {(r.method, r.size): r for r in results}
    methods = list(dict.fromkeys(r.method for r in results))
    sizes = sorted({r.size for r in results})
    for size in sizes:
        baselines = [by_key.get((name, size)) for name in BASELINES]
        out.rows += [
            _row(by_key[method, size], baselines, served) for method in methods if (method, size) in by_key
        ]
    tag = _size_label(sizes[-1])
    for method, key in ((served, "hnsw"), (NUMPY, "numpy")):
        result = by_key.get((method, sizes[-1]))
        if result is not None and result.timing is not None:
            out.summary[f"{key}_{tag}_p50_ms"] = f"{result.timing.median_ms:.3f}"
            if method == served and result.match_recall is not None:
                out.summary[f"hnsw_{tag}_match_recall"] = f"{result.match_recall:.4f}"
    milvus = [(r.size, r.timing) for r in results if r.method == milvus_method() and r.timing is not None]
    if milvus:
        size, timing = max(milvus, key=lambda pair: pair[0])
        out.summary[f"milvus_lite_{_size_label(size)}_p50_ms"] = f"{timing.median_ms:.3f}"
    out.details["index"] = {
        "k": K,
        "match_threshold": threshold,
        "hnsw": {
            "hnsw_m": hnsw.m,
            "hnsw_ef_construction": hnsw.ef_construction,
            "hnsw_ef_search": hnsw.ef_search,
        },
        "milvus_lite": {
            "max_size": MILVUS_LITE_MAX_SIZE,
            "hnsw_m": SearchSettings().milvus.hnsw_m,
            "ef_construction": SearchSettings().milvus.ef_construction,
            "ef_search": SearchSettings().milvus.ef_search,
        },
        "gallery": gallery,
        "results": [r.to_json() for r in results],
    }
    curves = []
    for method in methods:
        timed = [(r.size, r.timing) for r in results if r.method == method and r.timing is not None]
        if timed:
            curves.append(
                Curve(
                    method,
                    [float(size) for size, _ in timed],
                    [timing.median_ms for _, timing in timed],
                    [timing.p95_ms for _, timing in timed],
                )
            )
    out.plots.append(
        Plot(
            "bench_index_latency.png",
            f"Query latency vs gallery size (k={K}, one query at a time; band p50-p95)",
            "faces in the gallery",
            "ms per query",
            curves,
            log_x=True,
            log_y=True,
        )
    )
    return out
