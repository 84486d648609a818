"""dlib's jitter test-time augmentation (``num_jitters``), as pipeline variants for `make eval`.

dlib's ``compute_face_descriptor(image, shape, num_jitters=N)`` embeds N randomly perturbed
copies of the face chip and averages their descriptors; the 99.38% on LFW of dlib's model card
was measured that way (N = 100). dlib's ``jitter_image`` rotates by up to 3 degrees, rescales the
face to 97-100% of its height, shifts it by up to 2% of the chip and mirrors it half of the time.

Here each perturbation moves the alignment template instead of the chip: the least-squares
similarity fit onto a moved template is the fit onto the template, moved, so the warp samples the
photo itself and no chip corner is left black. The N perturbations are drawn once, from a fixed
seed, so every face gets the same ones and the cached embeddings stay reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detector import Detection
from embedder_service.models.pipeline import FacePipeline, split_per_image
from embedder_service.settings import EmbedderSettings
from tools.eval.embedding import OurPipeline, Variant

# dlib's jitter_image ranges (dlib/image_transforms/random_cropper and jitter_image).
MAX_ROTATION_DEGREES = 3.0
MIN_SCALE = 0.97
MAX_SHIFT = 0.02
SEED = 0


@dataclass(frozen=True)
class Jitter:
    template: np.ndarray  # (5, 2): where the landmarks go in this copy's chip
    mirror: bool


def draw_jitters(template: np.ndarray, chip_size: int, count: int, seed: int = SEED) -> list[Jitter]:
    """``count`` random perturbations of ``template`` about the chip's centre, in dlib's ranges."""
    rng = np.random.default_rng(seed)
    centre = np.array([chip_size / 2, chip_size / 2])
    jitters = []
    for _ in range(count):
        angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
        scale = rng.uniform(MIN_SCALE, 1.0)
        rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * chip_size
        moved = (template - centre) @ rotation.T + centre + shift
        jitters.append(Jitter(moved, bool(rng.random() < 0.5)))
    return jitters


class JitteredPipeline(FacePipeline):
    """Each face embedded as the mean of its jittered chips' embeddings, renormalised."""

    def __init__(self, base: FacePipeline, count: int) -> None:
        super().__init__(base.detector, base.aligner, base.encoder, False, base.detect_max_side)
        size = base.aligner.chip_size
        self.aligners = [
            (FaceAligner(jitter.template, size, base.aligner.mode), jitter.mirror)
            for jitter in draw_jitters(base.aligner.template, size, count)
        ]

    def _face_vector(self, image: np.ndarray, face: Detection) -> np.ndarray:
        chips = [aligner.align(image, face.landmarks) for aligner, _ in self.aligners]
        chips = [
            chip[:, ::-1] if mirror else chip for chip, (_, mirror) in zip(chips, self.aligners, strict=True)
        ]
        mean = self.encoder.embed(np.ascontiguousarray(np.stack(chips))).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def embed(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[np.ndarray]:
        vectors = [
            self._face_vector(image, face)
            for image, faces in zip(images, detections, strict=True)
            for face in faces
        ]
        stacked = np.stack(vectors) if vectors else np.zeros((0, self.encoder.spec.dimension), np.float32)
        return split_per_image(stacked.astype(np.float32), detections)


class JitterEmbedder(OurPipeline):
    """Our pipeline (the configured alignment, no flip) with ``num_jitters`` = each of ``counts``."""

    def __init__(self, counts: Sequence[int], settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        base = Variant(settings.alignment, flip=False)
        super().__init__([base], settings)
        plain = self.pipelines[base.name]
        self.pipelines = {f"{base.name}+jitter{count}": JitteredPipeline(plain, count) for count in counts}
        self.names = tuple(self.pipelines)
