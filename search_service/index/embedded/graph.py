"""The embedded index's HNSW graph (faiss), and the file that keeps it across restarts.

Graph parameters come from ``HnswSettings``; why they are what they are: docs/decisions/index.md.
Building is the expensive part (many minutes at a million faces), so the graph is saved with the
face id of every node and a stamp naming the store and parameters it was built from; at start it
is mapped back onto the stored faces by face id instead of being rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import structlog

from facesearch_common.files import atomic_writer
from search_service.index.embedded.columns import FaceColumns
from search_service.index.embedded.exact import Eligible
from search_service.settings import HnswSettings

log = structlog.get_logger(__name__)

GRAPH_FILE = "hnsw.npz"
# Bumped when the file layout changes; a file of another format is rebuilt, never misread.
_FORMAT = 1


def new_graph(dimension: int, settings: HnswSettings) -> faiss.Index:
    # Inner product on unit vectors is cosine similarity, the score the index reports.
    graph = faiss.IndexHNSWFlat(dimension, settings.m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = settings.ef_construction
    return graph


def search_graph(
    graph: faiss.Index, queries: np.ndarray, k: int, eligible: Eligible, ef_search: int
) -> tuple[np.ndarray, np.ndarray]:
    """Node positions and scores per query; positions are -1 where the walk found fewer than k."""
    params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # absent from faiss's stubs
    params.efSearch = max(ef_search, k)
    if eligible.mask is not None:
        bitmap = eligible.bitmap()
        # faiss keeps a raw pointer: `bitmap` and `selector` must outlive the search call.
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        params.sel = selector
    scores, positions = graph.search(queries, k, params=params)
    return positions, scores


def stamp(store_id: str, dimension: int, settings: HnswSettings) -> dict[str, object]:
    """What a saved graph must have been built for to be reused. efConstruction is left out: a
    graph built with another one is still a correct graph, and rebuilding costs minutes."""
    return {"format": _FORMAT, "store_id": store_id, "dimension": dimension, "m": settings.m}


def save(path: Path, graph_bytes: np.ndarray, node_ids: np.ndarray, graph_stamp: dict[str, object]) -> None:
    """Replace the graph file (``faiss.serialize_index`` bytes) atomically: a crash leaves the
    previous graph or this one."""
    with atomic_writer(path, "wb") as file:
        np.savez(file, graph=graph_bytes, face_ids=node_ids, stamp=np.array(json.dumps(graph_stamp)))
    log.info("hnsw graph saved", nodes=len(node_ids), path=str(path))


def load(path: Path, graph_stamp: dict[str, object]) -> tuple[faiss.Index, np.ndarray] | None:
    """The saved graph and its nodes' face ids; None when there is none fit to reuse."""
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            saved_stamp = json.loads(str(saved["stamp"]))
            node_ids = saved["face_ids"]
            graph_bytes = saved["graph"]
        if saved_stamp != graph_stamp:
            log.info("saved graph is stale: rebuilding", stamp=saved_stamp)
            return None
        graph = faiss.deserialize_index(graph_bytes)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        log.warning("saved graph unreadable: rebuilding", error=str(error))
        return None
    if graph.ntotal != len(node_ids):
        log.warning("saved graph does not match its node ids: rebuilding")
        return None
    return graph, node_ids


def align(table: FaceColumns, node_ids: np.ndarray) -> FaceColumns:
    """The stored faces reordered so that row i is graph node i, then the faces the graph lacks.

    ``table`` holds the stored faces in ascending face id. Nodes of faces deleted since the save
    become dead rows (HNSW cannot remove nodes); faces added since follow the nodes, to be added
    to the graph.
    """
    stored_ids = table.face_ids[: table.n]
    at = np.minimum(np.searchsorted(stored_ids, node_ids), table.n - 1)
    found = stored_ids[at] == node_ids
    ordered = table.take(at)
    ordered.face_ids[: ordered.n] = node_ids
    ordered.alive[: ordered.n] = found
    ordered.append(table.columns(np.flatnonzero(~np.isin(stored_ids, node_ids))))
    log.info(
        "saved graph loaded", nodes=len(node_ids), dead=int((~found).sum()), to_add=ordered.n - len(node_ids)
    )
    return ordered
