"""AS-norm in the evaluation: cohort draws, pair scores and the calibrated normalised threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_service.services.asnorm import CohortProtocol, CohortScorer
from tools.eval.embedding import EmbeddingTable
from tools.eval.metrics import false_match_rate, threshold_at_far
from tools.eval.normalization import (
    NormalizationResult,
    cohort_draws,
    evaluate_normalization,
    normalized_pair_scores,
)
from tools.eval.pairs import Pair, Split, ten_fold_splits
from tools.eval.report import normalization_markdown

DIMENSION = 128
PHOTOS_PER_PERSON = 3
# Small enough to draw fast, the same shape as the service's (cohort, minimum, K).
PROTOCOL = CohortProtocol(size=200, minimum=180, top_k=20)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _photo(person: int, index: int) -> str:
    return f"person{person:04d}/photo{index}.jpg"


@pytest.fixture(scope="module")
def faces() -> tuple[EmbeddingTable, list[str]]:
    """400 people, 3 photos each: a person's photos near their own random direction (cosine ~0.8)."""
    rng = np.random.default_rng(7)
    centres = _unit(rng.normal(size=(400, DIMENSION)))
    names, vectors = [], []
    for person, centre in enumerate(centres):
        for index in range(PHOTOS_PER_PERSON):
            names.append(_photo(person, index))
            vectors.append(centre + rng.normal(scale=0.05, size=DIMENSION))
    root = Path("/lfw")
    rows = {str((root / name).resolve()): row for row, name in enumerate(names)}
    return EmbeddingTable(rows, _unit(np.array(vectors)), np.ones(len(names), dtype=bool)), names


def _pairs(people: range, rng: np.random.Generator) -> list[Pair]:
    same = [Pair(_photo(p, 0), _photo(p, 1), same=True) for p in people]
    others = rng.permutation(np.array(people))
    different = [
        Pair(_photo(p, 0), _photo(int(q), 2), same=False)
        for p, q in zip(people, others, strict=True)
        if p != q
    ]
    return same + different


def test_the_threshold_at_a_far_accepts_that_share_of_different_pairs_and_no_more() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 1000), rng.normal(4, 1, 1000)])
    same = np.arange(2000) >= 1000
    threshold = threshold_at_far(scores, same, 0.01)
    assert false_match_rate(scores, same, threshold) == pytest.approx(0.01)
    # Halfway into the gap: the 11th-highest different-person score is just below, rejected.
    eleventh = np.sort(scores[~same])[-11]
    assert eleventh < threshold < np.sort(scores[~same])[-10]
    assert false_match_rate(scores, same, eleventh) > 0.01


def test_draws_are_distinct_reproducible_and_differ_by_seed(faces: tuple[EmbeddingTable, list[str]]) -> None:
    table, _ = faces
    first, second = list(cohort_draws(table.vectors, PROTOCOL, 2))
    again, _ = list(cohort_draws(table.vectors, PROTOCOL, 2))
    for members in (first, second):
        assert len(members) == PROTOCOL.size == len(set(members.tolist()))
        similarities = table.vectors[members] @ table.vectors[members].T
        np.fill_diagonal(similarities, -1.0)
        assert similarities.max() < PROTOCOL.distinct_below
    np.testing.assert_array_equal(first, again)
    assert set(first.tolist()) != set(second.tolist())


def test_a_pair_is_scored_without_its_own_photos_in_the_cohort(
    faces: tuple[EmbeddingTable, list[str]],
) -> None:
    table, _ = faces
    a, b = table.vectors[0], table.vectors[1]  # one person's two photos
    cohort = table.vectors[1:300]  # holds b
    kept = normalized_pair_scores(a[None], b[None], [np.array([], dtype=np.int64)], cohort, PROTOCOL)[0]
    left_out = normalized_pair_scores(a[None], b[None], [np.array([0])], cohort, PROTOCOL)[0]
    scorer = CohortScorer(cohort[1:], PROTOCOL)
    expected = scorer.normalize(np.array([[a @ b]]), scorer.statistics(a), scorer.statistics(b))[0, 0]
    assert left_out == pytest.approx(expected)
    # With b in a's cohort, a's statistics count its own match: the pair scores lower.
    assert kept < left_out


def test_calibration_gives_the_asked_false_match_rate_on_its_own_pairs(
    faces: tuple[EmbeddingTable, list[str]],
) -> None:
    table, names = faces
    pairs = _pairs(range(400), np.random.default_rng(1))
    gallery = [Path("/lfw") / name for name in names]
    result = evaluate_normalization(
        table, [Split("own", pairs, pairs)], Path("/lfw"), gallery, PROTOCOL, draws=3, calibration_far=0.01
    )
    assert isinstance(result, NormalizationResult)
    assert result.cohort_sizes == [PROTOCOL.size] * 3
    different = sum(not pair.same for pair in pairs)
    for point in [*result.normalized, *result.raw_at_far]:
        assert point.false_match_rate == pytest.approx(np.floor(0.01 * different) / different)
        assert point.true_match_rate == 1.0
    assert result.threshold == round(float(np.mean([p.threshold for p in result.normalized])), 2)
    assert result.to_json()["normalized_threshold"] == result.threshold
    assert f"**{result.threshold:.2f}**" in normalization_markdown(result, "synthetic")


def test_each_fold_is_judged_at_its_own_threshold_in_every_draw(
    faces: tuple[EmbeddingTable, list[str]],
) -> None:
    table, names = faces
    rng = np.random.default_rng(3)
    folds = [_pairs(range(0, 200), rng), _pairs(range(200, 400), rng)]
    gallery = [Path("/lfw") / name for name in names]
    result = evaluate_normalization(table, ten_fold_splits(folds), Path("/lfw"), gallery, PROTOCOL, draws=2)
    assert isinstance(result, NormalizationResult)
    assert len(result.normalized) == 4 and len(result.raw_at_far) == len(result.raw_best_accuracy) == 2
    # Each fold's threshold comes from the other fold's pairs: the two differ.
    assert result.normalized[0].threshold != result.normalized[1].threshold


def test_a_gallery_too_small_for_a_cohort_says_so(faces: tuple[EmbeddingTable, list[str]]) -> None:
    table, names = faces
    pairs = _pairs(range(50), np.random.default_rng(2))
    small = [Path("/lfw") / name for name in names[:150]]
    result = evaluate_normalization(
        table, [Split("own", pairs, pairs)], Path("/lfw"), small, PROTOCOL, draws=1
    )
    assert isinstance(result, str) and "raw cosine" in result
    assert "No cohort" in normalization_markdown(result, "synthetic")
