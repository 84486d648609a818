"""Large galleries of realistic face embeddings, grown from the real LFW embeddings.

Uniform random vectors make every ANN index look broken (their neighbourhoods are all alike and
nothing is near anything), so the index benchmark needs real embeddings; but LFW has 5k photos
and the goal is stated at 1M. The scheme, with numbers measured on our embeddings of lfw_dev:

* The real embeddings are centred on their mean ``mu`` (all faces share one direction: a pair of
  different people still has cosine 0.84 on average) and the residuals span only 81 of the 128
  dimensions.
* Each synthetic copy of the real set applies one random rotation ``T`` to every residual and
  renormalises: ``y = unit(mu + T (x - mu))``. A rotation is an isometry, so within a copy each
  "person" keeps the photo-to-photo distances of a real person (up to the small correction of
  the renormalisation), and each copy is a new population of people with the real set's structure.
* ``T`` rotates within bands of ``band`` principal components of similar variance, and keeps
  the first (largest) component fixed. A free rotation of the whole subspace would mix large
  components with small ones and spread the copies out (0.3% of pairs of different people at
  cosine 0.90 or more, against 2.9% among the real faces), making search easier than it is;
  rotating within bands keeps the covariance, and the fixed top component keeps the coarse trait
  along which many people look alike. Result: 1.8% of real-to-copy pairs reach 0.90, and a
  person's copy resembles that person about as an impostor does (cosine 0.87, impostors 0.84).
  :func:`neighbourhood_check` measures this on every run, at the match threshold (``bench.json``).

The gallery is the real set (minus the held-out queries) followed by copy 1, copy 2, ...: its
first ``n`` rows are the gallery of size ``n``, identical from run to run for one seed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder_service.settings import EmbedderSettings
from tools.eval.embedding import OurPipeline, Variant, embed_photos
from tools.eval.pairs import lfw_gallery


@dataclass(frozen=True)
class RealEmbeddings:
    vectors: np.ndarray  # (n, d) float32, unit length; photos where a face was found
    identities: list[str]
    tag: str  # model checksums: galleries built from other models get other cache names


def real_embeddings(
    lfw_dir: Path, cache_dir: Path, limit: int | None, settings: EmbedderSettings
) -> RealEmbeddings:
    """The service's default pipeline over an LFW-layout folder (whole identities up to ``limit``
    photos), through the embedding cache ``make eval`` fills too."""
    photos = lfw_gallery(lfw_dir, limit)
    pipeline = OurPipeline([Variant(settings.alignment, settings.flip_augment)], settings)
    (table,) = embed_photos(pipeline, [lfw_dir / path for path, _ in photos], cache_dir, "ours").values()
    vectors, found = table.select([str((lfw_dir / path).resolve()) for path, _ in photos])
    identities = [identity for (_, identity), ok in zip(photos, found, strict=True) if ok]
    return RealEmbeddings(vectors[found], identities, pipeline.cache_tag())


def hold_out_queries(identities: Sequence[str], count: int) -> np.ndarray:
    """Rows to use as queries: the last photo of people with at least two, evenly spread.

    Held out of the gallery, a query is a new photo of an indexed person, as in real use
    (querying with an indexed photo would find itself at cosine 1.0).
    """
    counts = Counter(identities)
    last = {identity: row for row, identity in enumerate(identities)}
    candidates = np.array(sorted(row for identity, row in last.items() if counts[identity] >= 2), np.int64)
    if count >= len(candidates):
        return candidates
    return candidates[np.linspace(0, len(candidates) - 1, count).round().astype(np.int64)]


class SyntheticGallery:
    """The real vectors followed by rotated copies (the scheme is in the module docstring)."""

    def __init__(self, real: np.ndarray, seed: int = 0, band: int = 8, keep: int = 1) -> None:
        self.real = np.ascontiguousarray(real, dtype=np.float32)
        self.seed, self.band, self.keep = seed, band, keep
        data = self.real.astype(np.float64)
        self._mean = data.mean(axis=0)
        residuals = data - self._mean
        eigenvalues, eigenvectors = np.linalg.eigh(residuals.T @ residuals / len(data))
        order = np.argsort(eigenvalues)[::-1]
        self._basis = eigenvectors[:, order]
        # Components without variance carry nothing to rotate: keep them out of the bands.
        self._rank = int(np.count_nonzero(eigenvalues[order] > 1e-6 * eigenvalues.max()))
        digest = hashlib.sha256(self.real.tobytes())
        digest.update(f"rotated-bands:{seed}:{band}:{keep}".encode())
        self.digest = digest.hexdigest()[:12]

    def rotation(self, copy: int) -> np.ndarray:
        """The d x d rotation of copy number ``copy`` (>= 1), in the original coordinates."""
        rng = np.random.default_rng([self.seed, copy])
        dimension = len(self._mean)
        within = np.eye(dimension)
        for start in range(self.keep, self._rank, self.band):
            size = min(self.band, self._rank - start)
            # QR of a Gaussian matrix, signs fixed by R's diagonal: a uniformly random rotation.
            q, r = np.linalg.qr(rng.standard_normal((size, size)))
            within[start : start + size, start : start + size] = q * np.sign(np.diag(r))
        return self._basis @ within @ self._basis.T

    def copy(self, number: int) -> np.ndarray:
        rotated = self._mean + (self.real - self._mean) @ self.rotation(number).T
        return (rotated / np.linalg.norm(rotated, axis=1, keepdims=True)).astype(np.float32)

    def vectors(self, n: int) -> np.ndarray:
        """The first ``n`` gallery rows."""
        parts = [self.real[:n]]
        have, number = len(parts[0]), 1
        while have < n:
            parts.append(self.copy(number)[: n - have])
            have += len(parts[-1])
            number += 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def neighbourhood_check(
    gallery: SyntheticGallery, identities: Sequence[str], threshold: float, sample: int = 1500
) -> dict[str, float]:
    """How alike the copies are to the real set, at the match threshold.

    ``impostors_real``: share of real pairs of different people scoring at or above the
    threshold; ``impostors_copy``: the same for pairs of a real photo and a copy's photo (always
    different people). Close values mean the copies crowd the real faces as real people do.
    ``self_copy``: mean cosine of a photo and its own copy, which should look like an impostor's.
    """
    rows = np.linspace(0, len(gallery.real) - 1, min(sample, len(gallery.real))).round().astype(np.int64)
    real = gallery.real[rows]
    copied = gallery.copy(1)[rows]
    labels = np.asarray(identities)[rows]
    different = labels[:, None] != labels[None, :]
    real_scores = real @ real.T
    copy_scores = real @ copied.T
    return {
        "impostors_real": float((real_scores[different] >= threshold).mean()),
        "impostors_copy": float((copy_scores >= threshold).mean()),
        "self_copy": float(np.diag(copy_scores).mean()),
        "impostor_mean_real": float(real_scores[different].mean()),
    }
