"""The search request this backend sends, and how it reads the answer back.

One ``_msearch`` carries every query face. The collection and source filters sit inside the knn
clause (efficient filtering: k hits whenever k documents pass), never beside it. Scores come back
in OpenSearch's innerproduct form and are converted to cosine exactly (docs/decisions/index.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search_service.domain import Source
from search_service.errors import IndexUnavailableError
from search_service.index.base import IndexHit
from search_service.index.opensearch.cluster import UNAVAILABLE_STATUSES
from search_service.index.opensearch.mapping import VECTOR_FIELD

# The k-NN plugin's ceiling on k, and OpenSearch's default index.max_result_window for `size`.
MAX_K = 10_000


def cosine(score: float) -> float:
    """Cosine similarity of two unit vectors from OpenSearch's innerproduct score, which is
    ``1 + ip`` when ``ip > 0`` and ``1 / (1 - ip)`` otherwise."""
    return score - 1.0 if score > 1.0 else 1.0 - 1.0 / score


def knn_search(
    vector: np.ndarray, k: int, ef_search: int, collection: str | None, source: Source | None
) -> dict[str, Any]:
    """One query face's search body. For lucene the knn clause's ``k`` is also the graph search's
    candidate list, so it asks for ``max(k, ef_search)`` candidates and keeps ``size = k`` hits."""
    knn: dict[str, Any] = {"vector": vector.tolist(), "k": max(k, ef_search)}
    terms: list[dict[str, Any]] = []
    if collection is not None:
        terms.append({"term": {"collection": collection}})
    if source is not None:
        terms.append({"term": {"source": source}})
    if terms:
        # Inside the knn clause, never beside it: a post-filter would cut the k nearest down to
        # fewer hits.
        knn["filter"] = {"bool": {"filter": terms}}
    return {"size": k, "_source": ["media_id"], "query": {"knn": {VECTOR_FIELD: knn}}}


def hits(index: str, response: dict[str, Any]) -> list[IndexHit]:
    """The hits of one ``_msearch`` response item, best first."""
    error = response.get("error")
    if error is not None:
        kind = error.get("type") if isinstance(error, dict) else None
        reason = (error.get("reason") or kind) if isinstance(error, dict) else error
        if response.get("status") in UNAVAILABLE_STATUSES or kind == "index_not_found_exception":
            raise IndexUnavailableError(f"OpenSearch could not search {index!r}: {reason}")
        raise RuntimeError(f"OpenSearch rejected the search: {reason}")
    shards = response["_shards"]
    if shards.get("failed") or response.get("timed_out"):
        # Hits from some shards only: neither the k nearest nor k hits are guaranteed.
        raise IndexUnavailableError(
            f"OpenSearch answered from {shards.get('successful')} of {shards.get('total')} shards"
        )
    return [
        IndexHit(int(hit["_id"]), int(hit["_source"]["media_id"]), cosine(hit["_score"]))
        for hit in response["hits"]["hits"]
    ]
