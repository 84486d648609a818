"""The eval tool's protocol parsing and metrics, on small hand-made inputs with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.eval.embedding import EmbeddingCache, EmbeddingTable, Variant, centre_face
from tools.eval.metrics import (
    accuracy,
    area_under_roc,
    average_precision,
    best_threshold,
    evaluate_fold,
    false_match_rate,
    precision_at,
    retrieval_metrics,
    summarize_folds,
    tar_at_far,
)
from tools.eval.pairs import (
    Pair,
    PairsFormatError,
    balanced_prefix,
    dev_split,
    lfw_gallery,
    parse_pairs,
    photo_path,
    ten_fold_splits,
)
from tools.eval.rerank import KReciprocal, QueryExpansion
from tools.eval.retrieval import rank_gallery

VIEW1 = """2
Aaron_Peirsol\t1\t2
Zinedine_Zidane\t2\t4
AJ_Cook\t1\tMarsha_Thomason\t1
Aaron_Sorkin\t2\tFrank_Solich\t5
"""


def ten_fold_text(per_half: int = 2) -> str:
    lines = [f"10\t{per_half}"]
    for fold in range(10):
        lines += [f"P{fold}_{k}\t1\t2" for k in range(per_half)]
        lines += [f"P{fold}_{k}\t1\tQ{fold}_{k}\t3" for k in range(per_half)]
    return "\n".join(lines) + "\n"


# -- pairs ------------------------------------------------------------------------------------


def test_view1_file_parses_to_one_fold_matched_first() -> None:
    (fold,) = parse_pairs(VIEW1)
    assert fold[0] == Pair(
        "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", True
    )
    assert fold[3] == Pair("Aaron_Sorkin/Aaron_Sorkin_0002.jpg", "Frank_Solich/Frank_Solich_0005.jpg", False)
    assert [pair.same for pair in fold] == [True, True, False, False]


def test_ten_fold_file_parses_to_ten_folds() -> None:
    folds = parse_pairs(ten_fold_text(per_half=3))
    assert len(folds) == 10
    assert all(len(fold) == 6 and sum(p.same for p in fold) == 3 for fold in folds)
    assert folds[4][0].first == "P4_0/P4_0_0001.jpg"


def test_ten_fold_splits_test_each_fold_once_and_train_on_the_rest() -> None:
    folds = parse_pairs(ten_fold_text())
    splits = ten_fold_splits(folds)
    assert len(splits) == 10
    for k, split in enumerate(splits):
        assert split.test == folds[k]
        assert len(split.train) == 9 * len(folds[k])
        assert not set(split.test) & set(split.train)


def test_dev_split_trains_on_one_file_and_tests_on_the_other() -> None:
    train, test = parse_pairs(VIEW1), parse_pairs("1\nA\t1\t2\nA\t1\tB\t1\n")
    (split,) = dev_split(train, test)
    assert len(split.train) == 4 and len(split.test) == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "two\nA\t1\t2\nA\t1\tB\t1\n",
        "2\nA\t1\t2\nA\t1\tB\t1\n",  # header promises 4 pairs
        "1\nA\t1\tB\t1\nA\t1\t2\n",  # mismatched where a matched pair belongs
        "1\nA\tone\t2\nA\t1\tB\t1\n",
    ],
)
def test_malformed_pairs_files_are_rejected(text: str) -> None:
    with pytest.raises(PairsFormatError):
        parse_pairs(text)


def test_photo_path_pads_the_index() -> None:
    assert photo_path("George_W_Bush", 12) == "George_W_Bush/George_W_Bush_0012.jpg"


def test_balanced_prefix_keeps_both_kinds() -> None:
    (fold,) = parse_pairs(VIEW1)
    assert [p.same for p in balanced_prefix(fold, 2)] == [True, False]


def test_gallery_limit_keeps_whole_identities(tmp_path: Path) -> None:
    for name, count in (("A", 2), ("B", 3), ("C", 1)):
        (tmp_path / name).mkdir()
        for i in range(1, count + 1):
            (tmp_path / name / photo_path(name, i).split("/")[1]).write_bytes(b"")
    assert [identity for _, identity in lfw_gallery(tmp_path)] == ["A", "A", "B", "B", "B", "C"]
    assert [identity for _, identity in lfw_gallery(tmp_path, limit=4)] == ["A", "A"]


# -- verification ---------------------------------------------------------------------------


def test_perfect_separator_gives_accuracy_and_auc_of_one() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, -0.3])
    same = np.array([True, True, True, False, False, False])
    threshold = best_threshold(scores, same)
    assert 0.2 < threshold < 0.7
    assert accuracy(scores, same, threshold) == 1.0
    assert false_match_rate(scores, same, threshold) == 0.0
    assert area_under_roc(scores, same) == 1.0
    assert tar_at_far(scores, same, 1e-3) == 1.0


def test_known_overlap() -> None:
    # One impostor (0.75) outscores one genuine pair (0.6): the best cut errs once.
    scores = np.array([0.9, 0.8, 0.6, 0.75, 0.3, 0.1])
    same = np.array([True, True, True, False, False, False])
    threshold = best_threshold(scores, same)
    assert accuracy(scores, same, threshold) == pytest.approx(5 / 6)
    # AUC: 8 of the 9 genuine/impostor orderings are right.
    assert area_under_roc(scores, same) == pytest.approx(8 / 9)
    # Without any false accept, only the two genuine pairs above 0.75 are accepted.
    assert tar_at_far(scores, same, 1e-3) == pytest.approx(2 / 3)
    assert false_match_rate(scores, same, 0.5) == pytest.approx(1 / 3)


def test_tied_optima_pick_the_middle_one() -> None:
    # Alternating labels: cuts at 0.2, 0.5 and 0.8 each get 4 of 6 right; 0.5 leans neither way.
    scores = np.array([0.1, 0.3, 0.4, 0.6, 0.7, 0.9])
    same = np.array([False, True, False, True, False, True])
    threshold = best_threshold(scores, same)
    assert threshold == pytest.approx(0.5)
    assert accuracy(scores, same, threshold) == pytest.approx(4 / 6)


def test_threshold_never_splits_equal_scores() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    same = np.array([True, True, False, True])
    threshold = best_threshold(scores, same)
    assert threshold < 0.5  # accept all: 3 of 4 right; no cut inside the tie exists
    assert accuracy(scores, same, threshold) == 0.75


def test_fold_summary_is_mean_and_std() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    same = np.array([True, False, True, False])
    folds = [evaluate_fold(f"f{k}", scores, same, scores, same) for k in range(3)]
    summary = summarize_folds(folds)
    assert summary["accuracy"].mean == 1.0 and summary["accuracy"].std == 0.0
    assert summary["threshold"].mean == pytest.approx(0.5)


# -- retrieval ------------------------------------------------------------------------------


def test_precision_and_average_precision_of_a_known_list() -> None:
    ranked = np.array([True, False, True, False, False])
    assert precision_at(ranked, 2) == 0.5
    assert precision_at(ranked, 3) == pytest.approx(2 / 3)
    # Relevant at ranks 1 and 3, and a third relevant item never retrieved.
    assert average_precision(ranked, 3) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert precision_at(np.array([True]), 4) == 0.25  # a short list counts its gaps as misses


def test_retrieval_metrics_cut_at_min_of_cutoff_and_n_minus_one() -> None:
    rankings = [np.array([True, False, False]), np.array([False, True, True]), np.zeros(0, dtype=bool)]
    result = retrieval_metrics(rankings, [1, 2, 1], cutoff=20)
    assert result.precision == pytest.approx((1 + 0.5 + 0) / 3)
    assert result.rank1 == pytest.approx(1 / 3)
    assert result.mean_average_precision == pytest.approx((1 + (1 / 2 + 2 / 3) / 2 + 0) / 3)
    assert result.queries == 3


def clustered_gallery() -> tuple[np.ndarray, list[str]]:
    """Three people, photos of each near their own axis."""
    rng = np.random.default_rng(0)
    identities = ["a", "a", "a", "b", "b", "c"]
    axes = {"a": 0, "b": 1, "c": 2}
    vectors = np.zeros((len(identities), 8))
    for row, identity in enumerate(identities):
        vectors[row, axes[identity]] = 1.0
    vectors += 0.05 * rng.standard_normal(vectors.shape)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), identities


def test_rank_gallery_excludes_the_query_and_skips_single_photo_people() -> None:
    vectors, identities = clustered_gallery()
    result = rank_gallery(vectors, np.ones(len(identities), dtype=bool), identities)
    assert result.queries == 5  # "c" has no other photo
    assert result.precision == 1.0 and result.rank1 == 1.0 and result.mean_average_precision == 1.0


def test_a_photo_without_face_is_neither_found_nor_a_good_query() -> None:
    vectors, identities = clustered_gallery()
    found = np.ones(len(identities), dtype=bool)
    found[0] = False
    result = rank_gallery(vectors, found, identities)
    # Query 0 scores 0; queries 1 and 2 find one of their two relevant photos at rank 1.
    assert result.precision == pytest.approx((0 + 0.5 + 0.5 + 1 + 1) / 5)
    assert result.rank1 == pytest.approx(4 / 5)


@pytest.mark.parametrize("reranker", [QueryExpansion(), KReciprocal(k1=3, k2=2)])
def test_rerankers_return_a_permutation_and_keep_a_clean_ranking(
    reranker: QueryExpansion | KReciprocal,
) -> None:
    vectors, identities = clustered_gallery()
    order = reranker(vectors[0], vectors[1:])
    assert sorted(order.tolist()) == list(range(len(vectors) - 1))
    result = rank_gallery(vectors, np.ones(len(identities), dtype=bool), identities, reranker)
    assert result.precision == 1.0


def test_query_expansion_pulls_in_a_photo_close_to_the_top_hit() -> None:
    query = np.array([1.0, 0.0, 0.0])
    # The first hit is the same person; the second photo of that person looks more like the
    # first hit than like the query, and an impostor sits slightly closer to the query.
    same_near = np.array([0.9, 0.436, 0.0])
    same_far = np.array([0.55, 0.835, 0.0])
    impostor = np.array([0.6, 0.0, 0.8])
    candidates = np.vstack([same_near, impostor, same_far])
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    assert (candidates @ query).argsort()[::-1].tolist() == [0, 1, 2]
    assert QueryExpansion(top=1, alpha=1.0)(query, candidates).tolist() == [0, 2, 1]


# -- embeddings -----------------------------------------------------------------------------


def test_variant_names_round_trip() -> None:
    assert Variant.parse("eyes_nose+flip") == Variant("eyes_nose", True)
    assert Variant("five_point", False).name == "five_point"
    with pytest.raises(ValueError):
        Variant.parse("three_point")


def test_centre_face_prefers_the_face_in_the_middle() -> None:
    big_bystander = np.array([0.0, 0.0, 120.0, 120.0])
    centred = np.array([100.0, 100.0, 150.0, 150.0])
    assert centre_face([big_bystander, centred], 250, 250) == 1
    assert centre_face([], 250, 250) is None


def test_pairs_with_a_missing_face_score_minus_one() -> None:
    table = EmbeddingTable(
        rows={"a": 0, "b": 1, "c": 2},
        vectors=np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 0.0]], dtype=np.float32),
        found=np.array([True, True, False]),
    )
    scores, both = table.pair_scores([("a", "b"), ("a", "c")])
    np.testing.assert_allclose(scores, [0.6, -1.0], rtol=1e-6)
    assert both.tolist() == [True, False]
    assert table.failures == 1


def test_embedding_cache_round_trips_vectors_and_misses(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "v-abc.npz"
    cache = EmbeddingCache(path, dimension=3)
    cache.put("/x/1.jpg", np.array([1.0, 0.0, 0.0], dtype=np.float32))
    cache.put("/x/2.jpg", None)
    cache.save()
    reloaded = EmbeddingCache(path, dimension=3)
    assert "/x/1.jpg" in reloaded and "/x/2.jpg" in reloaded and "/x/3.jpg" not in reloaded
    np.testing.assert_array_equal(reloaded.get("/x/1.jpg"), [1.0, 0.0, 0.0])
    assert reloaded.get("/x/2.jpg") is None
