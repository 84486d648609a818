"""Face encoder: aligned chips in, L2-normalised embeddings out, for any ONNX face model.

A model is described by an :class:`EncoderSpec` (input size, normalisation, dimension,
landmark template, match threshold), read from the model manifest, so a FaceNet-512 or ArcFace
export plugs in by adding an entry there; dlib's ResNet is the default because its weights install
from PyPI (docs/decisions/embedder.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from embedder_service.models.base import OnnxModel
from embedder_service.models.buckets import BatchLadder, ModelShapes
from embedder_service.models.session import RuntimeOptions


class EncoderSpec(BaseModel):
    name: str
    file: str
    dimension: int
    input_size: int
    # Per-channel mean and scale: input = (pixel - mean) * scale, channels in `channel_order`.
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]
    channel_order: str = Field(default="RGB", pattern="^(RGB|BGR)$")
    # Where the 5 detector landmarks (left eye, right eye, nose, mouth left, mouth right; image
    # left/right) should land in the chip, in chip pixels.
    landmark_template: list[tuple[float, float]] = Field(min_length=5, max_length=5)
    # Calibrated with the service's default alignment and flip averaging; no default, so that a
    # manifest written before the threshold travelled with the model fails to load.
    match_threshold: float = Field(
        ge=-1,
        le=1,
        description="cosine similarity from which two of this encoder's embeddings are the same person",
    )
    # Calibrated by `make eval` for the search service's cohort protocol (AS-norm); None where it
    # could not be measured, and then searches rank by cosine alone.
    normalized_threshold: float | None = Field(
        default=None,
        description="AS-norm score from which two of this encoder's embeddings are the same person",
    )


class FaceEncoder(OnnxModel):
    def __init__(
        self,
        spec: EncoderSpec,
        models_dir: Path,
        runtime: RuntimeOptions,
        max_batch: int = 64,
    ) -> None:
        super().__init__(models_dir / spec.file, runtime)
        self.spec = spec
        self.max_batch = max_batch
        self.batches = BatchLadder(max_batch)
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._scale = np.asarray(spec.scale, dtype=np.float32).reshape(1, 3, 1, 1)

    def shape_buckets(self) -> list[ModelShapes]:
        """Every input shape with buckets on: the ladder's batch sizes of chips."""
        size = self.spec.input_size
        return [ModelShapes(self, self.batches.shapes((3, size, size)))]

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """N x H x W x 3 RGB uint8 -> N x 3 x H x W float32, normalised as the spec says."""
        if self.spec.channel_order == "BGR":
            chips = chips[..., ::-1]
        tensor = chips.transpose(0, 3, 1, 2).astype(np.float32)
        return (tensor - self._mean) * self._scale

    def embed(self, chips: np.ndarray, flip_augment: bool = False) -> np.ndarray:
        """Embeds N aligned chips; returns N x dimension float32, unit length.

        With ``flip_augment`` each chip's embedding is averaged with its mirror image's: faces
        are nearly symmetric, so the average cancels part of the pose and alignment noise.
        """
        if len(chips) == 0:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        batch = np.concatenate([chips, chips[:, :, ::-1]]) if flip_augment else chips
        tensor = self.preprocess(np.ascontiguousarray(batch))
        # With shape buckets, each run is padded up to the ladder's next batch size.
        raw = self.batches.run(self, tensor, padded=self.runtime.buckets)[0]
        if flip_augment:
            raw = raw[: len(chips)] + raw[len(chips) :]
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.maximum(norms, 1e-12)).astype(np.float32)
