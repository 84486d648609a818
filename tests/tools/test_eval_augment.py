"""dlib-style jitter test-time augmentation: perturbations within dlib's ranges, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder_service.build.__main__ import DLIB_CHIP_TEMPLATE
from embedder_service.models.aligner import similarity_transform
from embedder_service.settings import EmbedderSettings
from tools.eval.augment import MAX_ROTATION_DEGREES, MAX_SHIFT, MIN_SCALE, JitterEmbedder, draw_jitters
from tools.eval.embedding import OurPipeline, Variant

TEMPLATE = np.array(DLIB_CHIP_TEMPLATE)
SIZE = 150


def test_jitters_stay_within_dlibs_ranges_and_vary() -> None:
    jitters = draw_jitters(TEMPLATE, SIZE, 200)
    angles, scales, shifts = [], [], []
    for jitter in jitters:
        matrix = similarity_transform(TEMPLATE, jitter.template)
        scale = float(np.hypot(*matrix[:, 0]))
        angles.append(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
        scales.append(scale)
        # The shift of the chip's centre, which the perturbation turns and scales about.
        centre = np.array([SIZE / 2, SIZE / 2])
        shifts.append(np.abs(matrix[:, :2] @ centre + matrix[:, 2] - centre).max() / SIZE)
    assert max(np.abs(angles)) <= MAX_ROTATION_DEGREES + 1e-9
    assert min(scales) >= MIN_SCALE - 1e-9 and max(scales) <= 1.0 + 1e-9
    assert max(shifts) <= MAX_SHIFT + 1e-9
    # Random, not constant: the draws spread over most of each range, and about half mirror.
    assert np.ptp(angles) > MAX_ROTATION_DEGREES and np.ptp(scales) > (1 - MIN_SCALE) / 2
    assert 60 < sum(jitter.mirror for jitter in jitters) < 140


def test_the_same_seed_draws_the_same_jitters() -> None:
    first, again = draw_jitters(TEMPLATE, SIZE, 5), draw_jitters(TEMPLATE, SIZE, 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.template, b.template)
        assert a.mirror == b.mirror
    other = draw_jitters(TEMPLATE, SIZE, 5, seed=1)
    assert not np.allclose(first[0].template, other[0].template)


def test_a_jittered_embedding_is_the_same_face(models_dir: Path, shared_data: Path) -> None:
    settings = EmbedderSettings(models_dir=models_dir, log_json=False)
    photo = shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    other = shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
    jittered = JitterEmbedder([4], settings)
    plain = OurPipeline([Variant(settings.alignment, flip=False)], settings)
    assert jittered.names == (f"{settings.alignment}+jitter4",)
    (name,) = jittered.names
    vector = jittered.embed(photo, [name])[name]
    reference = plain.embed(photo, plain.names)[plain.names[0]]
    assert vector is not None and reference is not None
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    # Close to the un-jittered embedding of the same photo, yet not it: the copies were moved.
    assert 0.95 < float(vector @ reference) < 0.99999
    # Still a face embedding: the same person's other photo is nearer than the threshold.
    second = jittered.embed(other, [name])[name]
    assert second is not None and float(vector @ second) > 0.91
