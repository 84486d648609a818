"""Shape buckets: the few input shapes a model runs on, all known before the first request.

On the GPU every new input shape costs a cuDNN algorithm search and new allocations, so
batches are padded up to a ladder of sizes (padding rows dropped from the outputs), and
P-Net's pyramid levels are packed into a few fixed canvas sizes (``models/detector.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedder_service.models.base import OnnxModel


@dataclass(frozen=True)
class ModelShapes:
    """A model and every input shape it runs on with buckets on: what warm-up runs once each."""

    model: OnnxModel
    shapes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class BatchLadder:
    """Batch sizes 1, 2, 4, ... below ``cap``, and ``cap``; larger batches run in parts of ``cap``."""

    cap: int

    @property
    def sizes(self) -> tuple[int, ...]:
        powers = [1 << bit for bit in range(self.cap.bit_length()) if 1 << bit < self.cap]
        return (*powers, self.cap)

    def bucket(self, count: int) -> int:
        """The smallest size that holds ``count`` (at most ``cap``) rows."""
        return next(size for size in self.sizes if size >= count)

    def shapes(self, row: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Every batch shape of rows shaped ``row``."""
        return tuple((size, *row) for size in self.sizes)

    def run(self, model: OnnxModel, inputs: np.ndarray, padded: bool) -> list[np.ndarray]:
        """``model`` on ``inputs`` in parts of at most ``cap`` rows; with ``padded`` each part is
        zero-padded up to its bucket, and the padding rows are dropped from the outputs."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(inputs), self.cap):
            part = inputs[start : start + self.cap]
            count = len(part)
            if padded and count < self.bucket(count):
                padding = np.zeros((self.bucket(count) - count, *part.shape[1:]), part.dtype)
                part = np.concatenate([part, padding])
            parts.append([output[:count] for output in model.run(part)])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]


@dataclass(frozen=True)
class Placement:
    """Where a rectangle went: canvas index, top and left (both even)."""

    canvas: int
    top: int
    left: int


def pack(sizes: Sequence[tuple[int, int]], side: int) -> tuple[list[Placement], int]:
    """Places (height, width) rectangles, none longer than ``side``, into ``side`` x ``side``
    canvases at even offsets; returns each one's placement and the count of canvases.

    Shelf packing, tallest first, each into the first shelf with room: a few dozen rectangles
    per batch, and no packing library we know aligns offsets to the 2-pixel pool grid P-Net needs.
    """
    placements: list[Placement | None] = [None] * len(sizes)
    # Per canvas: its shelves as [top, height, next free left], and the next free top.
    canvases: list[tuple[list[list[int]], list[int]]] = []
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i][0]):
        height, width = sizes[index]
        if height > side or width > side:
            raise ValueError(f"a {height}x{width} rectangle does not fit a {side}x{side} canvas")
        placements[index] = _place(canvases, height, width, side)
    return [placement for placement in placements if placement is not None], len(canvases)


def _place(
    canvases: list[tuple[list[list[int]], list[int]]], height: int, width: int, side: int
) -> Placement:
    for number, (shelves, free_top) in enumerate(canvases):
        for shelf in shelves:
            top, shelf_height, left = shelf
            if height <= shelf_height and left + width <= side:
                shelf[2] = _even(left + width)
                return Placement(number, top, left)
        if free_top[0] + height <= side:
            shelves.append([free_top[0], height, _even(width)])
            placement = Placement(number, free_top[0], 0)
            free_top[0] = _even(free_top[0] + height)
            return placement
    canvases.append(([[0, height, _even(width)]], [_even(height)]))
    return Placement(len(canvases) - 1, 0, 0)


def _even(value: int) -> int:
    return value + value % 2
