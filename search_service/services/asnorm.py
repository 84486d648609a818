"""Adaptive symmetric score normalisation (AS-norm) against a cohort of other people's faces.

A face that is close to many faces at once (small, blurred, a compressed video crop) scores high
raw cosines against everyone; AS-norm measures how high against a fixed cohort and scores a pair
s' = ((s - mean_a) / std_a + (s - mean_b) / std_b) / 2, with the mean and standard deviation of
each face's K highest cosines to the cohort. The protocol (cohort size, K, what counts as a
near duplicate) is part of the calibration of the normalised threshold, so it lives here as one
record that the service and the evaluation share (docs/decisions/search.md).

numpy only: each query scores a few hundred candidates against a 1,000-face cohort, one small
matrix product, which no vector library does better.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Faces whose statistics are computed at once.
_CHUNK = 4096


@dataclass(frozen=True)
class CohortProtocol:
    # Faces in a full cohort; below `minimum` there is none to normalise with (raw cosine instead).
    size: int = 1000
    minimum: int = 900
    # Each face's statistics come from its `top_k` highest cosines to the cohort.
    top_k: int = 100
    # A face joins the cohort only below this cosine to every member: near duplicates (the same
    # photo twice, one person's photos of one day) would weigh one person many times. Stricter
    # values keep out different people too, since dlib's cosines between them run high.
    distinct_below: float = 0.95
    # A member this close to the face being scored is that face itself (or a copy), not a peer.
    same_face_from: float = 0.99


@dataclass(frozen=True)
class FaceStatistics:
    """Mean and standard deviation of faces' top-K cohort cosines, one entry per face."""

    mean: np.ndarray
    std: np.ndarray


class CohortScorer:
    """Normalises cosine similarities against one cohort (rows: unit vectors)."""

    def __init__(self, cohort: np.ndarray, protocol: CohortProtocol) -> None:
        self.cohort = np.ascontiguousarray(cohort, dtype=np.float32)
        self.protocol = protocol

    def __len__(self) -> int:
        return len(self.cohort)

    def statistics(self, vectors: np.ndarray) -> FaceStatistics:
        """Each face's (row's) statistics, in chunks: a face's cosines to the cohort take 4 KB."""
        vectors = np.atleast_2d(vectors).astype(np.float32)
        starts = range(0, len(vectors), _CHUNK)
        chunks = [self._statistics(vectors[start : start + _CHUNK]) for start in starts]
        if not chunks:
            return FaceStatistics(np.zeros(0, np.float32), np.zeros(0, np.float32))
        return FaceStatistics(
            np.concatenate([chunk.mean for chunk in chunks]), np.concatenate([chunk.std for chunk in chunks])
        )

    def _statistics(self, vectors: np.ndarray) -> FaceStatistics:
        similarities = vectors @ self.cohort.T
        similarities[similarities >= self.protocol.same_face_from] = -np.inf
        k = min(self.protocol.top_k, similarities.shape[1])
        top = np.partition(similarities, similarities.shape[1] - k, axis=1)[:, -k:]
        # A face with a copy in the cohort lost one member: the -inf it left may be in the top K.
        top = np.where(np.isfinite(top), top, np.nan)
        std = np.nanstd(top, axis=1)
        return FaceStatistics(np.nanmean(top, axis=1), np.maximum(std, 1e-6))

    def normalize(self, cosines: np.ndarray, queries: FaceStatistics, targets: FaceStatistics) -> np.ndarray:
        """``cosines`` (queries x targets) as AS-norm scores."""
        query_z = (cosines - queries.mean[:, np.newaxis]) / queries.std[:, np.newaxis]
        target_z = (cosines - targets.mean[np.newaxis, :]) / targets.std[np.newaxis, :]
        result: np.ndarray = 0.5 * (query_z + target_z)
        return result


def draw_cohort(
    members: np.ndarray, candidates: Iterable[tuple[np.ndarray, np.ndarray]], protocol: CohortProtocol
) -> list[int]:
    """Ids of the candidates (batches of ids and unit vectors, in the order to try them) that join
    ``members``, each below ``distinct_below`` to every member and to every one admitted before
    it, until the cohort holds ``size`` faces."""
    wanted = protocol.size - len(members)
    admitted: list[int] = []
    chosen = [np.asarray(members, dtype=np.float32)] if len(members) else []
    if wanted <= 0:
        return admitted
    for ids, vectors in candidates:
        vectors = np.asarray(vectors, dtype=np.float32)
        pool = np.concatenate(chosen) if chosen else np.zeros((0, vectors.shape[1]), np.float32)
        distinct = (vectors @ pool.T).max(axis=1, initial=-1.0) < protocol.distinct_below
        ids, vectors = np.asarray(ids)[distinct], vectors[distinct]
        # Within the batch, greedily in order: each one against those of the batch admitted before it.
        among = vectors @ vectors.T
        taken: list[int] = []
        for row in range(len(vectors)):
            if len(admitted) + len(taken) >= wanted:
                break
            if not taken or among[row, taken].max() < protocol.distinct_below:
                taken.append(row)
        admitted.extend(int(face_id) for face_id in ids[taken])
        chosen.append(vectors[taken])
        if len(admitted) >= wanted:  # before reading another batch
            break
    return admitted
