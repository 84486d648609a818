"""AS-norm in the evaluation: the normalised threshold, calibrated with the service's own cohort code.

The service normalises scores against a de-duplicated sample of its own gallery
(:mod:`search_service.services.asnorm`). Here the gallery is the evaluation's, the sample is drawn
the same way (``draw_cohort`` over the gallery in random order), and the threshold is the one that
keeps the training pairs' false-match rate at a target, so that the number put into the model
manifest means the same in the service as here. A draw changes the threshold a little, so several
seeded draws give its mean and spread.

A pair's own photos are left out of the cohort that scores it. LFW's pairs come from the gallery
the cohort is drawn from, so without that a pair's other photo would often be among a face's top-K
peers; in the service a query is not in the gallery and its target is in the cohort only as often
as the cohort's size is to the gallery's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from search_service.services.asnorm import CohortProtocol, CohortScorer, draw_cohort
from tools.eval.embedding import EmbeddingTable
from tools.eval.metrics import (
    Summary,
    accuracy,
    best_threshold,
    false_match_rate,
    threshold_at_far,
    true_match_rate,
)
from tools.eval.pairs import Pair, Split

DEFAULT_DRAWS = 10
DEFAULT_CALIBRATION_FAR = 0.005
# Candidates go to draw_cohort in batches, as the service reads them from its store; the draw does
# not depend on the batch size.
_BATCH = 512
# A pair without a face scores below everything, as raw cosine's -1, so it is always "different";
# finite because scikit-learn's ROC refuses infinities.
_NO_FACE = float(np.finfo(np.float64).min)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold, chosen on training pairs, judged on test pairs."""

    threshold: float
    accuracy: float
    false_match_rate: float
    true_match_rate: float

    @classmethod
    def judge(cls, threshold: float, scores: np.ndarray, same: np.ndarray) -> OperatingPoint:
        same = np.asarray(same, dtype=bool)
        return cls(
            threshold=threshold,
            accuracy=accuracy(scores, same, threshold),
            false_match_rate=false_match_rate(scores, same, threshold),
            true_match_rate=true_match_rate(scores, same, threshold),
        )


@dataclass
class NormalizationResult:
    protocol: CohortProtocol
    calibration_far: float
    cohort_sizes: list[int]  # one per draw
    normalized: list[OperatingPoint]  # one per draw and split
    raw_best_accuracy: list[OperatingPoint]  # one per split
    raw_at_far: list[OperatingPoint]  # one per split

    @property
    def threshold(self) -> float:
        """The normalised threshold for the model manifest: the mean over draws and splits, to two
        decimals."""
        return round(float(np.mean([point.threshold for point in self.normalized])), 2)

    def to_json(self) -> dict[str, Any]:
        def summary(points: Sequence[OperatingPoint]) -> dict[str, dict[str, float]]:
            return {key: asdict(value) for key, value in summarize(points).items()}

        return {
            "protocol": asdict(self.protocol),
            "calibration_far": self.calibration_far,
            "draws": len(self.cohort_sizes),
            "cohort_sizes": self.cohort_sizes,
            "normalized_threshold": self.threshold,
            "normalized": summary(self.normalized),
            "normalized_per_draw": [asdict(point) for point in self.normalized],
            "raw_best_accuracy": summary(self.raw_best_accuracy),
            "raw_at_far": summary(self.raw_at_far),
        }


def summarize(points: Sequence[OperatingPoint]) -> dict[str, Summary]:
    fields = ("threshold", "accuracy", "false_match_rate", "true_match_rate")
    return {name: Summary.of([getattr(point, name) for point in points]) for name in fields}


def normalized_pair_scores(
    first: np.ndarray,
    second: np.ndarray,
    excluded: Sequence[np.ndarray],
    cohort: np.ndarray,
    protocol: CohortProtocol,
) -> np.ndarray:
    """AS-norm score of each pair (rows of ``first`` and ``second``, unit vectors), each against the
    cohort less its ``excluded`` rows (the pair's own photos where the cohort holds them)."""
    # Most pairs have neither photo in the cohort and share its one scorer.
    shared = CohortScorer(cohort, protocol)
    scores = np.empty(len(first))
    for row, (a, b, drop) in enumerate(zip(first, second, excluded, strict=True)):
        scorer = CohortScorer(np.delete(cohort, drop, axis=0), protocol) if len(drop) else shared
        cosine = np.array([[float(a @ b)]])
        scores[row] = scorer.normalize(cosine, scorer.statistics(a), scorer.statistics(b))[0, 0]
    return scores


def cohort_draws(vectors: np.ndarray, protocol: CohortProtocol, draws: int) -> Iterator[np.ndarray]:
    """Rows of ``vectors`` (the gallery's faces) in each seeded draw's cohort, as the service draws it."""
    for seed in range(draws):
        order = np.random.default_rng(seed).permutation(len(vectors))
        batches = ((ids, vectors[ids]) for ids in np.array_split(order, max(1, len(order) // _BATCH)))
        yield np.array(draw_cohort(np.zeros((0, vectors.shape[1])), batches, protocol), dtype=np.int64)


class _PairSet:
    """Pairs as vectors, with each pair's photos' keys, and which pairs have a face in both photos."""

    def __init__(self, pairs: Sequence[Pair], table: EmbeddingTable, lfw_dir: Path) -> None:
        keys = [(str((lfw_dir / p.first).resolve()), str((lfw_dir / p.second).resolve())) for p in pairs]
        self.same = np.array([pair.same for pair in pairs], dtype=bool)
        first, found_first = table.select([a for a, _ in keys])
        second, found_second = table.select([b for _, b in keys])
        self.found = found_first & found_second
        self.raw, _ = table.pair_scores(keys)
        self.first, self.second = first[self.found], second[self.found]
        self.keys = [pair for pair, found in zip(keys, self.found, strict=True) if found]

    def normalized(
        self, cohort: np.ndarray, cohort_keys: dict[str, int], protocol: CohortProtocol
    ) -> np.ndarray:
        excluded = [
            np.array([cohort_keys[key] for key in pair if key in cohort_keys], dtype=np.int64)
            for pair in self.keys
        ]
        scores = np.full(len(self.same), _NO_FACE)
        scores[self.found] = normalized_pair_scores(self.first, self.second, excluded, cohort, protocol)
        return scores


def evaluate_normalization(
    table: EmbeddingTable,
    splits: Sequence[Split],
    lfw_dir: Path,
    gallery: Sequence[Path],
    protocol: CohortProtocol | None = None,
    draws: int = DEFAULT_DRAWS,
    calibration_far: float = DEFAULT_CALIBRATION_FAR,
) -> NormalizationResult | str:
    """Raw cosine and AS-norm, each at thresholds calibrated on each split's training pairs; a reason
    instead when the gallery yields too few distinct faces for a cohort (the service then keeps raw
    cosine)."""
    protocol = protocol or CohortProtocol()
    gallery_keys = [str(path.resolve()) for path in gallery]
    vectors, found = table.select(gallery_keys)
    faces = np.flatnonzero(found)
    face_keys = [gallery_keys[row] for row in faces]
    # View 2's folds are each other's training pairs: every pair is scored once per draw.
    position = {
        pair: row for row, pair in enumerate(dict.fromkeys(p for s in splits for p in s.train + s.test))
    }
    pairs = _PairSet(list(position), table, lfw_dir)
    rows = [
        (np.array([position[p] for p in s.train]), np.array([position[p] for p in s.test])) for s in splits
    ]

    def judged(
        scores: np.ndarray, threshold_on_train: Callable[[np.ndarray, np.ndarray], float]
    ) -> list[OperatingPoint]:
        return [
            OperatingPoint.judge(
                threshold_on_train(scores[train], pairs.same[train]), scores[test], pairs.same[test]
            )
            for train, test in rows
        ]

    at_far = partial(threshold_at_far, far=calibration_far)
    raw_best, raw_far = judged(pairs.raw, best_threshold), judged(pairs.raw, at_far)
    sizes: list[int] = []
    normalized: list[OperatingPoint] = []
    for members in cohort_draws(vectors[faces], protocol, draws):
        sizes.append(len(members))
        if len(members) < protocol.minimum:
            return (
                f"the gallery gives {len(members)} distinct faces, fewer than the cohort minimum "
                f"{protocol.minimum}: the service would keep raw cosine"
            )
        cohort_keys = {face_keys[member]: row for row, member in enumerate(members)}
        scores = pairs.normalized(vectors[faces[members]], cohort_keys, protocol)
        normalized += judged(scores, at_far)
    return NormalizationResult(protocol, calibration_far, sizes, normalized, raw_best, raw_far)
