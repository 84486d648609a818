"""AS-norm arithmetic: each face's top-K statistics against a cohort (its own copies left out), the
normalised score of a pair, and how a cohort is drawn from candidates (greedy, de-duplicated, capped).

The cohorts are built by hand from orthogonal directions, so that every cosine is a chosen number."""

from __future__ import annotations

import numpy as np
import pytest

from search_service.services.asnorm import CohortProtocol, CohortScorer, FaceStatistics, draw_cohort

DIMENSION = 16
QUERY = np.eye(DIMENSION, dtype=np.float32)[0]


def at_cosines(*cosines: float) -> np.ndarray:
    """Unit vectors (rows) whose cosines to QUERY are ``cosines``, each leaning off it in a direction
    of its own, so that they are also far from one another."""
    rows = np.zeros((len(cosines), DIMENSION), np.float32)
    for row, cosine in enumerate(cosines):
        rows[row, 0] = cosine
        rows[row, row + 1] = np.sqrt(1 - cosine**2)
    return rows


def unit_rows(count: int, seed: int = 0, dimension: int = 128) -> np.ndarray:
    """Random unit vectors: in 128 dimensions any two are far below 0.93 apart."""
    rows = np.random.default_rng(seed).standard_normal((count, dimension))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def near(vector: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector at ``cosine`` to ``vector`` (a unit vector)."""
    other = np.random.default_rng(seed).standard_normal(len(vector))
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    return (cosine * vector + np.sqrt(1 - cosine**2) * other).astype(np.float32)


# ---- statistics ----


def test_statistics_are_the_mean_and_population_std_of_the_top_k_cosines() -> None:
    scorer = CohortScorer(at_cosines(0.1, 0.9, -0.5, 0.3, 0.5, -0.2), CohortProtocol(top_k=3))
    stats = scorer.statistics(QUERY)
    # The top 3 are 0.9, 0.5 and 0.3, whatever their order in the cohort.
    assert stats.mean == pytest.approx([1.7 / 3], abs=1e-6)
    # Deviations 1/3, -1/15 and -4/15; the population std, not the sample std (0.3055).
    assert stats.std == pytest.approx([np.sqrt((1 + 0.04 + 0.64) / 27)], abs=1e-6)
    assert stats.std == pytest.approx([0.249444], abs=1e-6)


def test_statistics_are_per_row_and_k_is_capped_at_the_cohort_size() -> None:
    cohort = at_cosines(0.8, 0.4)
    scorer = CohortScorer(cohort, CohortProtocol(top_k=100))
    stats = scorer.statistics(np.stack([QUERY, cohort[0]]))
    assert len(stats.mean) == len(stats.std) == 2
    assert (stats.mean[0], stats.std[0]) == pytest.approx((0.6, 0.2), abs=1e-6)  # both members
    # cohort[0] against the cohort: itself is left out (below), the other is at 0.8 * 0.4 = 0.32.
    assert (stats.mean[1], stats.std[1]) == pytest.approx((0.32, 1e-6), abs=1e-6)


def test_a_face_and_its_copies_are_no_peers_of_itself() -> None:
    peers = at_cosines(0.7, 0.5, 0.2, 0.1)
    protocol = CohortProtocol(top_k=3, same_face_from=0.99)
    alone = CohortScorer(peers, protocol).statistics(QUERY)
    # The query itself, and a copy at 0.995 (the same photo re-encoded), are in the cohort too.
    with_copies = np.concatenate([peers, QUERY[np.newaxis], near(QUERY, 0.995, seed=1)[np.newaxis]])
    copied = CohortScorer(with_copies, protocol).statistics(QUERY)
    np.testing.assert_allclose(copied.mean, alone.mean, atol=1e-6)
    np.testing.assert_allclose(copied.std, alone.std, atol=1e-6)
    assert alone.mean == pytest.approx([(0.7 + 0.5 + 0.2) / 3], abs=1e-6)
    # Just below same_face_from, a close face is a peer (the top one).
    close = CohortScorer(np.concatenate([peers, near(QUERY, 0.985, seed=2)[np.newaxis]]), protocol)
    assert close.statistics(QUERY).mean == pytest.approx([(0.985 + 0.7 + 0.5) / 3], abs=1e-5)


def test_a_copy_in_a_cohort_of_k_leaves_k_minus_one_peers() -> None:
    """K is the whole cohort and one member is the face itself: the statistics come from the others."""
    cohort = np.concatenate([at_cosines(0.6, 0.2, 0.1), QUERY[np.newaxis]])
    stats = CohortScorer(cohort, CohortProtocol(top_k=4)).statistics(QUERY)
    assert stats.mean == pytest.approx([0.3], abs=1e-6)
    assert stats.std == pytest.approx([np.std([0.6, 0.2, 0.1])], abs=1e-6)
    assert np.isfinite(stats.mean).all() and np.isfinite(stats.std).all()


def test_a_face_equally_close_to_every_member_still_normalises_to_finite_scores() -> None:
    scorer = CohortScorer(at_cosines(0.3, 0.3, 0.3), CohortProtocol(top_k=3))
    stats = scorer.statistics(QUERY)
    assert stats.std[0] > 0  # floored, not zero
    assert np.isfinite(scorer.normalize(np.array([[0.5]]), stats, stats)).all()


# ---- normalize ----


def test_normalize_averages_the_two_z_scores() -> None:
    scorer = CohortScorer(at_cosines(0.1), CohortProtocol())
    queries = FaceStatistics(mean=np.array([0.2, 0.0]), std=np.array([0.1, 0.5]))
    targets = FaceStatistics(mean=np.array([0.4, 0.8, 0.0]), std=np.array([0.2, 0.1, 1.0]))
    cosines = np.array([[0.8, 0.9, 0.5], [0.5, 0.3, -0.5]])
    # E.g. first row, first column: ((0.8 - 0.2) / 0.1 + (0.8 - 0.4) / 0.2) / 2 = (6 + 2) / 2.
    expected = [[4.0, 4.0, 1.75], [0.75, -2.2, -0.75]]
    np.testing.assert_allclose(scorer.normalize(cosines, queries, targets), expected, atol=1e-9)


def test_normalize_is_symmetric_in_query_and_target() -> None:
    scorer = CohortScorer(unit_rows(50, seed=1), CohortProtocol(top_k=10))
    a, b = unit_rows(3, seed=2), unit_rows(4, seed=3)
    a_stats, b_stats = scorer.statistics(a), scorer.statistics(b)
    forward = scorer.normalize(a @ b.T, a_stats, b_stats)
    backward = scorer.normalize(b @ a.T, b_stats, a_stats)
    assert forward.shape == (3, 4)
    np.testing.assert_allclose(forward, backward.T, rtol=1e-5, atol=1e-5)


def test_a_face_close_to_many_cohort_faces_scores_lower_at_the_same_cosine() -> None:
    """The point of AS-norm: of two pairs at the same cosine, the one whose stored face is close to
    many cohort faces (a "hub", such as a small blurred crop) scores lower."""
    hub = unit_rows(1, seed=4)[0]
    crowd = [near(hub, cosine, seed=i) for i, cosine in enumerate(np.linspace(0.5, 0.7, 20))]
    cohort = np.concatenate([unit_rows(100, seed=5), np.stack(crowd)])
    scorer = CohortScorer(cohort, CohortProtocol(top_k=20))
    query, ordinary = unit_rows(2, seed=6)
    targets = scorer.statistics(np.stack([ordinary, hub]))
    assert targets.mean[1] > targets.mean[0] + 0.3
    scores = scorer.normalize(np.array([[0.9, 0.9]]), scorer.statistics(query), targets)
    assert scores[0, 0] > scores[0, 1]


# ---- draw_cohort ----


def batches(vectors: np.ndarray, size: int, first_id: int = 100) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidates as the repository yields them: ids and vectors in batches of ``size``."""
    ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
    return [(ids[i : i + size], vectors[i : i + size]) for i in range(0, len(vectors), size)]


def empty_cohort(dimension: int = 128) -> np.ndarray:
    return np.zeros((0, dimension), np.float32)


def test_every_distinct_candidate_joins_in_the_order_given() -> None:
    candidates = unit_rows(7, seed=8)
    admitted = draw_cohort(empty_cohort(), batches(candidates, 3), CohortProtocol(size=20))
    assert admitted == list(range(100, 107))


def test_the_draw_from_an_empty_store_reads_an_empty_cohort() -> None:
    """An empty store's cohort: no members, no candidates (as the repository reads them)."""
    assert draw_cohort(np.zeros((0, 0), np.float32), [], CohortProtocol(size=5)) == []
    # Its members read as a (0, 0) array; candidates of any dimension may join it, across batches.
    admitted = draw_cohort(
        np.zeros((0, 0), np.float32), batches(unit_rows(6, seed=9), 2), CohortProtocol(size=5)
    )
    assert admitted == [100, 101, 102, 103, 104]


def test_a_near_duplicate_of_a_member_stays_out() -> None:
    members = unit_rows(3, seed=10)
    fresh = unit_rows(2, seed=11)
    twin = near(members[1], 0.95, seed=12)  # above distinct_below: the same person again
    cousin = near(members[2], 0.92, seed=13)  # just below it: kept
    candidates = np.stack([fresh[0], twin, cousin, fresh[1]])
    admitted = draw_cohort(members, batches(candidates, 4), CohortProtocol(size=20, distinct_below=0.93))
    assert admitted == [100, 102, 103]


def test_within_a_batch_the_first_of_two_near_duplicates_joins() -> None:
    base = unit_rows(3, seed=14)
    twin = near(base[0], 0.97, seed=15)
    protocol = CohortProtocol(size=20)
    assert draw_cohort(empty_cohort(), batches(np.stack([base[0], base[1], twin, base[2]]), 4), protocol) == [
        100,
        101,
        103,
    ]
    # In the other order, the twin is the one that joins.
    assert draw_cohort(empty_cohort(), batches(np.stack([twin, base[1], base[0], base[2]]), 4), protocol) == [
        100,
        101,
        103,
    ]


def test_a_near_duplicate_of_one_admitted_from_an_earlier_batch_stays_out() -> None:
    base = unit_rows(4, seed=16)
    candidates = np.stack(
        [base[0], base[1], near(base[0], 0.96, seed=17), base[2], near(base[3], 0.5, seed=18)]
    )
    admitted = draw_cohort(empty_cohort(), batches(candidates, 2), CohortProtocol(size=20))
    assert admitted == [100, 101, 103, 104]


def test_near_duplicates_of_a_face_left_out_do_not_keep_others_out() -> None:
    """Only the admitted count: a candidate close to one that was refused is judged on its own."""
    members = unit_rows(1, seed=19)
    refused = near(members[0], 0.95, seed=20)
    # At about 0.93 * 0.95 to the member, but close to the refused one only.
    beside = near(refused, 0.96, seed=21)
    assert float(beside @ members[0]) < 0.93
    protocol = CohortProtocol(size=5, distinct_below=0.93)
    admitted = draw_cohort(members, batches(np.stack([refused, beside]), 2), protocol)
    assert admitted == [101]


def test_the_draw_stops_once_the_cohort_is_full() -> None:
    members = unit_rows(2, seed=22)
    candidates = unit_rows(10, seed=23)
    # Within a batch...
    assert draw_cohort(members, batches(candidates, 10), CohortProtocol(size=5)) == [100, 101, 102]
    # ...and across batches.
    assert draw_cohort(members, batches(candidates, 2), CohortProtocol(size=5)) == [100, 101, 102]
    # A full cohort takes nobody.
    assert draw_cohort(members, batches(candidates, 2), CohortProtocol(size=2)) == []


def test_batches_that_yield_nobody_are_passed_over() -> None:
    """An empty batch, and one of near duplicates only, leave the draw going with the next."""
    members = unit_rows(2, seed=24)
    fresh = unit_rows(3, seed=25)
    duplicates = np.stack([near(members[0], 0.99, seed=26), near(members[1], 0.98, seed=27)])
    candidates = [
        (np.array([], np.int64), empty_cohort()),
        (np.array([1, 2]), duplicates),
        (np.array([3]), fresh[:1]),
        (np.array([4, 5]), fresh[1:]),
    ]
    assert draw_cohort(members, candidates, CohortProtocol(size=10)) == [3, 4, 5]


def test_too_few_distinct_candidates_give_a_short_draw() -> None:
    base = unit_rows(2, seed=28)
    candidates = np.stack([base[0], near(base[0], 0.99, seed=29), base[1], near(base[1], 0.97, seed=30)])
    assert draw_cohort(empty_cohort(), batches(candidates, 3), CohortProtocol(size=10)) == [100, 102]
