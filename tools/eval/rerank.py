"""Re-ranking of a query's top hits, using only the query and those hits' vectors.

Both methods need nothing beyond what one index search returns (the top-K hits with their
vectors), so the search service could apply them per query without a gallery-wide pass.
Each returns the new order of the candidates, as indices into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Reranker(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


@dataclass(frozen=True)
class QueryExpansion:
    """Alpha-weighted query expansion: search again with the query plus its top hits.

    Photos of one person taken in different conditions are each closer to some of the
    person's other photos than to the query; adding the confident top hits to the query
    pulls those in. Weights are similarity**alpha, so weak hits add little.

    One hit is the default: most people in a face gallery have few photos, so the second
    and third hits are mostly other people, and (cosines of different people being high,
    0.8-0.9, for dlib's descriptor) adding them drags the query towards them (measured on
    LFW: precision drops by 3-6 points with 3 hits, rises by 1-2 with one).
    """

    top: int = 1
    alpha: float = 3.0

    @property
    def name(self) -> str:
        return f"qe(n={self.top},a={self.alpha:g})"

    def __call__(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        similarity = candidates @ query
        weights = np.clip(similarity[: self.top], 0.0, None) ** self.alpha
        expanded = _unit(query + weights @ candidates[: self.top])
        return np.argsort(-(candidates @ expanded), kind="stable")


@dataclass(frozen=True)
class KReciprocal:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) inside the candidate set.

    Two photos that are each among the other's k nearest neighbours are likely the same
    person; a candidate whose reciprocal neighbourhood overlaps the query's (Jaccard
    distance) moves up. Computed on the query plus its top-K hits only, so each neighbour
    test sees the candidates, not the whole gallery.

    The paper's k1=20, k2=6 suit person re-identification, with dozens of images per
    identity; with the 1-8 photos per person of a face gallery they pull strangers in
    (LFW dev: precision 0.90 -> 0.63). The defaults were chosen on half of LFW dev's
    identities and hold on the other half.
    """

    k1: int = 2
    k2: int = 1
    weight: float = 0.7  # share of the original distance in the final one

    @property
    def name(self) -> str:
        return f"kr(k1={self.k1},k2={self.k2},l={self.weight:g})"

    def __call__(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        points = np.vstack([query[None, :], candidates]).astype(np.float64)
        size = len(points)
        distance = np.clip(2.0 - 2.0 * points @ points.T, 0.0, None)  # squared Euclidean, unit vectors
        ranks = np.argsort(distance, axis=1, kind="stable")

        def neighbourhood(k: int) -> np.ndarray:
            """member[i, j]: j is i itself or among its k nearest."""
            member = np.zeros((size, size), dtype=bool)
            np.put_along_axis(member, ranks[:, : min(k, size - 1) + 1], True, axis=1)
            return member

        near = neighbourhood(self.k1)
        reciprocal = near & near.T
        half_near = neighbourhood(max(1, round(self.k1 / 2)))
        half = half_near & half_near.T
        # A neighbour j brings in its own (smaller) reciprocal set when most of that set is
        # already reciprocal to i: this recovers same-person photos that missed the k1 cut.
        overlap = reciprocal.astype(np.int32) @ half.T.astype(np.int32)
        brings = reciprocal & (overlap > (2.0 / 3.0) * half.sum(axis=1)[None, :])
        expanded = reciprocal | ((brings.astype(np.int32) @ half.astype(np.int32)) > 0)

        weights = np.where(expanded, np.exp(-distance), 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        if self.k2 > 1:
            # Smooth each row over its nearest neighbours so one noisy row counts less.
            weights = (neighbourhood(self.k2 - 1).astype(np.float64) @ weights) / min(self.k2, size)

        shared = np.minimum(weights[0], weights[1:]).sum(axis=1)
        union = np.maximum(weights[0], weights[1:]).sum(axis=1)
        jaccard = 1.0 - shared / np.maximum(union, 1e-12)
        final = (1.0 - self.weight) * jaccard + self.weight * distance[0, 1:]
        return np.argsort(final, kind="stable")
