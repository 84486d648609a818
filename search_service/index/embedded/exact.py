"""Exact search over the face table: one matrix product and a partial sort, under exact filters.

Below ``HnswSettings.min_faces`` candidate faces this is the whole search (about a millisecond,
always right, no graph to build); above it, it is the fallback that keeps a selective filter's
promise of k hits (docs/decisions/index.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search_service.index.embedded.columns import FaceColumns


@dataclass
class Eligible:
    """The rows a query may return under one filter; ``mask`` None means every row."""

    mask: np.ndarray | None
    count: int
    _bitmap: np.ndarray | None = None

    @classmethod
    def select(
        cls, table: FaceColumns, live: int, collection_code: int | None, source_code: int | None
    ) -> Eligible:
        """Live rows of this collection and source (None: any)."""
        if collection_code is None and source_code is None and live == table.n:
            return cls(None, table.n)
        mask = table.alive[: table.n].copy()
        if collection_code is not None:
            mask &= table.collections[: table.n] == collection_code
        if source_code is not None:
            mask &= table.sources[: table.n] == source_code
        return cls(mask, int(np.count_nonzero(mask)))

    def bitmap(self) -> np.ndarray:
        """The mask as faiss.IDSelectorBitmap reads it: bit (i & 7) of byte (i >> 3)."""
        if self._bitmap is None:
            assert self.mask is not None
            self._bitmap = np.packbits(self.mask, bitorder="little")
        return self._bitmap


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest scores per row, best first."""
    n = scores.shape[1]
    if k < n:
        top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        top = np.broadcast_to(np.arange(n), scores.shape).copy()
    values = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


def search_exact(
    table: FaceColumns, queries: np.ndarray, k: int, eligible: Eligible
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions and cosine scores of the k best eligible rows per query (k <= eligible.count)."""
    vectors = table.vectors[: table.n]
    if eligible.mask is None:
        return top_k(queries @ vectors.T, k)
    if eligible.count * 4 < table.n:
        # A small subset: gathering it is cheaper than scoring every row.
        candidates = np.flatnonzero(eligible.mask)
        top, scores = top_k(queries @ vectors[candidates].T, k)
        return candidates[top], scores
    all_scores = queries @ vectors.T
    all_scores[:, ~eligible.mask] = -np.inf
    return top_k(all_scores, k)
