"""The retrieval protocol: every photo of a person with at least two photos queries the gallery."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tools.eval.metrics import RetrievalResult, retrieval_metrics
from tools.eval.rerank import Reranker


def rank_gallery(
    vectors: np.ndarray,
    found: np.ndarray,
    identities: Sequence[str],
    reranker: Reranker | None = None,
    depth: int = 100,
    cutoff: int = 20,
) -> RetrievalResult:
    """Queries each gallery photo whose identity has another photo; the query itself is excluded.

    Photos without a face are not in the index (they cannot be found) and, as queries,
    score zero. ``reranker`` reorders each query's top ``depth`` hits.
    """
    labels = np.asarray(identities)
    counts = Counter(identities)
    indexed = np.flatnonzero(found)
    index_vectors, index_labels = vectors[indexed], labels[indexed]
    queries = [i for i, label in enumerate(identities) if counts[label] >= 2]
    rankings: list[np.ndarray] = []
    n_relevant: list[int] = []
    for query in queries:
        n_relevant.append(counts[identities[query]] - 1)
        if not found[query]:
            rankings.append(np.zeros(0, dtype=bool))
            continue
        similarity = index_vectors @ vectors[query]
        order = np.argsort(-similarity, kind="stable")
        order = order[indexed[order] != query]
        if reranker is not None:
            top = order[:depth]
            order = np.concatenate([top[reranker(vectors[query], index_vectors[top])], order[depth:]])
        rankings.append(index_labels[order] == labels[query])
    return retrieval_metrics(rankings, n_relevant, cutoff=cutoff)
