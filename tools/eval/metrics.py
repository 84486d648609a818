"""Verification and retrieval metrics.

Verification: a pair is called "same person" when its similarity is at or above the
threshold. Retrieval: each query's ranked gallery list is given as a boolean array, True
where the hit shows the query's identity (the query photo itself already removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

# Thresholds outside the observed scores sit this far beyond them (cosine lives in [-1, 1]).
_EDGE = 1e-6


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs.

    Every cut between two distinct sorted scores is tried. When several cuts tie, the middle
    one of them is taken, so the choice leans neither to accepting nor to rejecting.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if len(scores) == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(scores, kind="stable")
    ordered, positive = scores[order], same[order]
    # Cut i accepts ordered[i:]: its correct calls are the positives at or above the cut plus
    # the negatives below it.
    positives_above = np.concatenate([np.cumsum(positive[::-1])[::-1], [0]])
    negatives_below = np.concatenate([[0], np.cumsum(~positive)])
    correct = positives_above + negatives_below
    # Cutting inside a run of equal scores is not a threshold anyone can apply.
    valid = np.ones(len(ordered) + 1, dtype=bool)
    valid[1:-1] = ordered[1:] > ordered[:-1]
    correct = np.where(valid, correct, -1)
    best = np.flatnonzero(correct == correct.max())
    cut = int(best[len(best) // 2])
    if cut == 0:
        return float(ordered[0] - _EDGE)
    if cut == len(ordered):
        return float(ordered[-1] + _EDGE)
    return float((ordered[cut - 1] + ordered[cut]) / 2)


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, dtype=bool)))


def false_match_rate(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of different-person pairs called a match at ``threshold``."""
    different = ~np.asarray(same, dtype=bool)
    if not different.any():
        return 0.0
    return float(np.mean(np.asarray(scores)[different] >= threshold))


def true_match_rate(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of same-person pairs called a match at ``threshold``."""
    same = np.asarray(same, dtype=bool)
    if not same.any():
        return 0.0
    return float(np.mean(np.asarray(scores)[same] >= threshold))


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The threshold that accepts the most pairs while their false-match rate stays at or below ``far``.

    It sits halfway between the lowest score it accepts and the next score down: the tail of the
    different-person scores is sparse, and either end of the gap would lean on one pair.
    """
    # ROC cut-offs run from +inf down through every distinct score; fpr rises along them.
    fpr, _, cuts = roc_curve(np.asarray(same, dtype=bool), scores, drop_intermediate=False)
    last = int(np.flatnonzero(fpr <= far)[-1])
    below = cuts[last + 1] if last + 1 < len(cuts) else cuts[last]
    return float((cuts[last] + below) / 2)


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False accept rates and true accept rates over every threshold."""
    fpr, tpr, _ = roc_curve(np.asarray(same, dtype=bool), scores, drop_intermediate=False)
    return fpr, tpr


def area_under_roc(scores: np.ndarray, same: np.ndarray) -> float:
    return float(roc_auc_score(np.asarray(same, dtype=bool), scores))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Highest true accept rate whose false accept rate stays at or below ``far``.

    With few negative pairs (500 in View 1 DevTest) FAR 1e-3 means no false accept at all.
    """
    fpr, tpr = roc(scores, same)
    return float(tpr[fpr <= far].max())


@dataclass(frozen=True)
class FoldResult:
    name: str
    threshold: float
    accuracy: float
    false_match_rate: float
    auc: float
    tar_at_far: float


def evaluate_fold(
    name: str,
    train_scores: np.ndarray,
    train_same: np.ndarray,
    test_scores: np.ndarray,
    test_same: np.ndarray,
    far: float = 1e-3,
) -> FoldResult:
    threshold = best_threshold(train_scores, train_same)
    return FoldResult(
        name=name,
        threshold=threshold,
        accuracy=accuracy(test_scores, test_same, threshold),
        false_match_rate=false_match_rate(test_scores, test_same, threshold),
        auc=area_under_roc(test_scores, test_same),
        tar_at_far=tar_at_far(test_scores, test_same, far),
    )


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(float(np.mean(values)), float(np.std(values)))


def summarize_folds(folds: Sequence[FoldResult]) -> dict[str, Summary]:
    """Mean and standard deviation over folds of each number (std 0 for View 1's single split)."""
    fields = ("threshold", "accuracy", "false_match_rate", "auc", "tar_at_far")
    return {field: Summary.of([getattr(fold, field) for fold in folds]) for field in fields}


def precision_at(relevant: np.ndarray, k: int) -> float:
    """Share of the first ``k`` hits that are relevant; a list shorter than k counts its gaps as misses."""
    return float(np.count_nonzero(relevant[:k]) / k)


def average_precision(relevant: np.ndarray, n_relevant: int) -> float:
    """Mean of the precisions at each relevant hit, over all ``n_relevant`` items.

    Relevant items that never appear in the list (no face found) contribute zero.
    """
    hits = np.flatnonzero(relevant)
    if n_relevant == 0:
        return 0.0
    return float(np.sum(np.arange(1, len(hits) + 1) / (hits + 1)) / n_relevant)


@dataclass(frozen=True)
class RetrievalResult:
    precision: float  # mean precision of the top min(cutoff, n_relevant)
    mean_average_precision: float
    rank1: float
    queries: int


def retrieval_metrics(
    rankings: Sequence[np.ndarray], n_relevant: Sequence[int], cutoff: int = 20
) -> RetrievalResult:
    """Mean precision@min(cutoff, n_relevant), mAP and rank-1 over queries.

    ``n_relevant`` is, per query, the number of other photos of the same identity in the
    gallery (n - 1); queries with none are the caller's to leave out.
    """
    if len(rankings) != len(n_relevant):
        raise ValueError("one relevant count per ranking is needed")
    if not rankings:
        raise ValueError("no queries")
    precisions, aps, firsts = [], [], []
    for relevant, count in zip(rankings, n_relevant, strict=True):
        if count < 1:
            raise ValueError("a query needs at least one other photo of its identity")
        precisions.append(precision_at(relevant, min(cutoff, count)))
        aps.append(average_precision(relevant, count))
        firsts.append(bool(len(relevant) and relevant[0]))
    return RetrievalResult(
        precision=float(np.mean(precisions)),
        mean_average_precision=float(np.mean(aps)),
        rank1=float(np.mean(firsts)),
        queries=len(rankings),
    )
