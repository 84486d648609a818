"""Exact nearest neighbours (the ground truth) and how much of it an approximate index returns."""

from __future__ import annotations

import numpy as np


def exact_top_k(
    gallery: np.ndarray, queries: np.ndarray, k: int, block: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and cosine similarities of the ``k`` most similar gallery rows per query, best first.

    Unit vectors, so the inner product is the cosine. Queries go in blocks to bound the
    score matrix at ``block`` x gallery size (a few hundred MB at 1M).
    """
    queries = np.atleast_2d(queries)
    k = min(k, len(gallery))
    positions = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        block_scores = queries[start : start + block] @ gallery.T
        top = np.argpartition(-block_scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(block_scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        positions[start : start + block] = np.take_along_axis(top, order, axis=1)
        scores[start : start + block] = np.take_along_axis(top_scores, order, axis=1)
    return positions, scores


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of the exact top-k positions (rows of ``truth``) found in the index's answer (rows of
    ``found``, padded with -1 where it returned fewer)."""
    hits = sum(np.isin(t, f).sum() for t, f in zip(truth, found, strict=True))
    return float(hits) / truth.size if truth.size else 1.0


def match_recall(
    truth: np.ndarray, truth_scores: np.ndarray, found: np.ndarray, threshold: float
) -> float | None:
    """Of the exact top-k hits that pass the match threshold, the share the index returned.

    This is what a user sees: a missed match is a photo of the person that search did not
    show, while a missed weak neighbour changes nothing on screen. Pooled over queries (each
    match counts once); None when no query has a match, so no recall can be measured.
    """
    wanted = returned = 0
    for positions, scores, answer in zip(truth, truth_scores, found, strict=True):
        matches = positions[scores >= threshold]
        wanted += len(matches)
        returned += int(np.isin(matches, answer).sum())
    return returned / wanted if wanted else None
