"""Runs the verification and retrieval protocols over one pipeline variant's embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.eval.embedding import EmbeddingTable
from tools.eval.metrics import FoldResult, RetrievalResult, Summary, evaluate_fold, summarize_folds
from tools.eval.pairs import Pair, Split
from tools.eval.rerank import Reranker
from tools.eval.retrieval import rank_gallery

NO_RERANK = "none"


@dataclass
class PipelineResult:
    name: str
    folds: list[FoldResult]
    summary: dict[str, Summary]
    # Every test pair's score once (View 1 DevTest; View 2 each fold's test pairs): the ROC.
    test_scores: np.ndarray
    test_same: np.ndarray
    test_pairs_without_face: int
    retrieval: dict[str, RetrievalResult]  # by re-ranking method, NO_RERANK included
    photos: int
    photos_without_face: int
    ms_per_photo: float | None = None


def _keyed(pairs: Sequence[Pair], root: Path) -> list[tuple[str, str]]:
    return [(str((root / p.first).resolve()), str((root / p.second).resolve())) for p in pairs]


def evaluate(
    name: str,
    table: EmbeddingTable,
    splits: Sequence[Split],
    lfw_dir: Path,
    gallery: Sequence[tuple[Path, str]],
    rerankers: Sequence[Reranker],
    far: float,
) -> PipelineResult:
    folds, test_scores, test_same = [], [], []
    without_face = 0
    for split in splits:
        train, _ = table.pair_scores(_keyed(split.train, lfw_dir))
        test, both_found = table.pair_scores(_keyed(split.test, lfw_dir))
        train_same = np.array([pair.same for pair in split.train])
        same = np.array([pair.same for pair in split.test])
        folds.append(evaluate_fold(split.name, train, train_same, test, same, far=far))
        test_scores.append(test)
        test_same.append(same)
        without_face += int(np.count_nonzero(~both_found))
    retrieval: dict[str, RetrievalResult] = {}
    if gallery:
        vectors, found = table.select([str(path.resolve()) for path, _ in gallery])
        identities = [identity for _, identity in gallery]
        retrieval[NO_RERANK] = rank_gallery(vectors, found, identities)
        for reranker in rerankers:
            retrieval[reranker.name] = rank_gallery(vectors, found, identities, reranker)
    return PipelineResult(
        name=name,
        folds=folds,
        summary=summarize_folds(folds),
        test_scores=np.concatenate(test_scores),
        test_same=np.concatenate(test_same),
        test_pairs_without_face=without_face,
        retrieval=retrieval,
        photos=len(table.rows),
        photos_without_face=table.failures,
    )
