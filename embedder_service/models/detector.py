"""MTCNN face detector on three ONNX graphs, reproducing facenet-pytorch's ``detect_face``.

Parity with facenet-pytorch (the reference recorded in tests/embedder/data) needs its exact
choices of pyramid, crops, float32 comparisons, NMS flavours and box regression, which differ
from the original MTCNN code in places; each is listed, with the agreement measured, in
docs/decisions/embedder.md, and stated again where the code makes it.

Every resize reads one integral image (summed-area table) of the photo, so a window sum
is a few look-ups and no pixel is summed twice, whatever the scale; the crops of a stage
are resized together in one gather. Dividing the exact integer sum by the window height,
then by its width, in float32, is bit-identical to torch's kernel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from embedder_service.models.base import OnnxModel
from embedder_service.models.buckets import BatchLadder, ModelShapes, Placement, pack
from embedder_service.models.detection import Detection, DetectionOptions, FaceDetector, split_rows
from embedder_service.models.session import RuntimeOptions

PNET_CELL = 12  # P-Net's receptive field: the smallest face a pyramid level can find
# facenet-pytorch's defaults, which the parity reference was recorded with; the service always
# passes its own (EmbedderSettings), keeping only the P- and R-Net cut-offs.
REFERENCE_MIN_FACE_SIZE = 20
REFERENCE_THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net
PYRAMID_FACTOR = 0.709
NMS_PER_SCALE = 0.5
NMS_ACROSS = 0.7
NMS_OUTPUT = 0.7
INT32_SAFE_PIXELS = (2**31 - 1) // 255  # no 8-bit image sum of this many pixels overflows int32
NMS_BLOCK = 256  # boxes whose overlaps with all later ones are computed at once: bounds memory
# Shape buckets (models/buckets.py). P-Net's canvases: their sides, the pixels of one run at most
# (so a run's memory stays bounded), and how many sides a batch tries, smallest fitting first.
PNET_CANVAS_SIDES = (128, 256, 384, 512, 768, 1024, 1536, 2048, 3072)
PNET_RUN_PIXELS = 2048 * 2048
PNET_SIDE_CHOICES = 3
PACKED_PNET_FILE = "pnet_packed.onnx"
# Added to conv1's activations outside every level (build/mtcnn_nets.py): far below any real
# activation (inputs lie in [-1, 1], conv1's weights are small), yet finite, so no inf - inf
# makes NaNs, even in the cells never read back.
PACKED_MASK_OFF = np.float32(-1e4)
RNET_BATCH = 256  # candidates per R-Net run at most, with buckets on
ONET_BATCH = 64


def as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _integral_image(rgb: np.ndarray) -> np.ndarray:
    """(H + 1, W + 1, 4) summed-area table of R, G, B (and an unused 4th channel).

    Four interleaved 32-bit channels make a pixel 16 bytes, a size numpy's ``take`` moves
    as one item: twice as fast as gathering three channels.
    """
    rgba = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA)
    height, width, _ = rgb.shape
    if height * width <= INT32_SAFE_PIXELS:
        return cv2.integral(rgba, sdepth=cv2.CV_32S)  # ~15x faster than numpy's cumsums
    # Larger sums overflow 32 bits. Unsigned numpy arithmetic wraps modulo 2^32, by
    # definition, in the cumsums and in every difference taken later, so each window sum,
    # far below 2^32, still comes out exact; a float64 table would take twice the memory.
    table = np.zeros((height + 1, width + 1, 4), np.uint32)
    np.cumsum(rgba, axis=0, dtype=np.uint32, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


def _pixels(table: np.ndarray) -> np.ndarray:
    """View (..., 4) 32-bit numbers as (...) opaque 16-byte pixels, for fast gathers."""
    return table.view(np.dtype((np.void, 4 * table.itemsize)))[..., 0]


def _numbers(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return pixels.view(dtype).reshape(*pixels.shape, 4)


def _area_windows(size_in: np.ndarray | int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of torch's adaptive-average-pool windows; broadcasts over size_in."""
    i = np.arange(size_out)
    return np.multiply.outer(size_in, i) // size_out, -(-np.multiply.outer(size_in, i + 1) // size_out)


def _normalised_means(sums: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Window sums (..., 3, out_h, out_w) -> contiguous net input; rows (..., out_h) and cols
    (..., out_w) are the window sizes.

    Divides by the window height, then its width, in float32: bit-identical to torch's kernel.
    """
    mean = sums.astype(np.float32, order="C")
    mean /= rows.astype(np.float32)[..., None, :, None]
    mean /= cols.astype(np.float32)[..., None, None, :]
    mean -= np.float32(127.5)
    mean *= np.float32(0.0078125)
    return mean


def _resize_image(table: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The whole photo area-resized to a (1, 3, out_h, out_w) pyramid level.

    Separable: differences of whole rows first (contiguous copies), then of columns, which
    gathers far fewer elements than four corner look-ups per output pixel.
    """
    r0, r1 = _area_windows(table.shape[0] - 1, out_h)
    c0, c1 = _area_windows(table.shape[1] - 1, out_w)
    band = table[r1]
    band -= table[r0]
    band = _pixels(band)
    sums = _numbers(np.take(band, c1, axis=1), table.dtype) - _numbers(np.take(band, c0, axis=1), table.dtype)
    return _normalised_means(sums[..., :3].transpose(2, 0, 1), r1 - r0, c1 - c0)[None]


def _resize_regions(
    table: np.ndarray, top: np.ndarray, left: np.ndarray, height: np.ndarray, width: np.ndarray, size: int
) -> np.ndarray:
    """Image regions, (N,) int arrays each, area-resized to (N, 3, size, size) in one gather."""
    r0, r1 = _area_windows(height, size)
    c0, c1 = _area_windows(width, size)
    stride = table.shape[1]
    rows0, rows1 = ((r0 + top[:, None]) * stride)[:, :, None], ((r1 + top[:, None]) * stride)[:, :, None]
    cols0, cols1 = (c0 + left[:, None])[:, None, :], (c1 + left[:, None])[:, None, :]
    flat = _pixels(table).reshape(-1)

    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _numbers(np.take(flat, rows + cols), table.dtype)

    sums = corner(rows1, cols1)
    sums -= corner(rows0, cols1)
    sums -= corner(rows1, cols0)
    sums += corner(rows0, cols0)
    return _normalised_means(sums[..., :3].transpose(0, 3, 1, 2), r1 - r0, c1 - c0)


def _suppression(
    rows: np.ndarray,
    row_area: np.ndarray,
    cols: np.ndarray,
    col_area: np.ndarray,
    limit: np.float32,
    min_mode: bool,
) -> np.ndarray:
    """(len(rows), len(cols)) booleans: does row box i suppress column box j.

    Element for element the float32 arithmetic of the source implementations, so the
    comparisons come out the same.
    """
    lo = np.maximum(rows[:2, :, None], cols[:2, None, :])
    sides = np.minimum(rows[2:, :, None], cols[2:, None, :])
    sides -= lo
    if min_mode:
        sides += np.float32(1)
    np.maximum(sides, np.float32(0), out=sides)
    inter = sides[0] * sides[1]
    if min_mode:
        return ~(inter / np.minimum(row_area[:, None], col_area[None, :]) <= limit)
    return inter / (row_area[:, None] + col_area[None, :] - inter) > limit


def _greedy_nms(boxes: np.ndarray, order: np.ndarray, limit: np.float32, min_mode: bool) -> np.ndarray:
    """Indices kept by greedy NMS visiting boxes in ``order``, in visiting order.

    Hand-written because the two flavours the reference mixes exist in no library we use:
    torchvision's (IoU with areas (x2 - x1) * (y2 - y1), suppress when IoU > threshold)
    and facenet-pytorch's "Min" (intersection over the smaller area, both with the +1
    pixel convention, keep when <= threshold). cv2.dnn.NMSBoxes takes (x, y, w, h)
    rectangles, filters by score itself and has no "Min" overlap.

    Greedy NMS is sequential; overlaps are computed for a block of boxes against all
    later ones at once, leaving only a pass over booleans to Python.
    """
    coords = boxes[order].T.copy()  # rows x1, y1, x2, y2, in visiting order
    pad = np.float32(1 if min_mode else 0)
    area = (coords[2] - coords[0] + pad) * (coords[3] - coords[1] + pad)
    count = order.size
    removed = np.zeros(count, bool)
    keep: list[int] = []
    # Degenerate (zero-area) boxes give NaN overlaps: each flavour keeps or drops them as its source does.
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, count, NMS_BLOCK):
            stop = min(start + NMS_BLOCK, count)
            suppress = _suppression(
                coords[:, start:stop], area[start:stop], coords[:, start:], area[start:], limit, min_mode
            )
            for i in range(start, stop):
                if not removed[i]:
                    keep.append(i)
                    removed[i + 1 :] |= suppress[i - start, i + 1 - start :]
    return order[np.asarray(keep, dtype=np.intp)]


def _float32_at_most(value: float) -> np.float32:
    """The largest float32 <= value: for float32 x, ``x > value`` in float64 equals ``x > this``."""
    nearest = np.float32(value)
    return nearest if nearest <= value else np.nextafter(nearest, np.float32(-np.inf))


def _nms_iou(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision.ops.nms (which compares in float64): highest score first, ties in input order."""
    return _greedy_nms(boxes, np.argsort(-scores, kind="stable"), _float32_at_most(threshold), min_mode=False)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's nms_numpy "Min" (float32 comparison): it pops the end of an ascending
    sort, so ties go last-first."""
    return _greedy_nms(boxes, np.argsort(scores, kind="stable")[::-1], np.float32(threshold), min_mode=True)


def _pyramid_scales(height: int, width: int, min_face_size: int) -> list[float]:
    """Scales at which P-Net's 12 px window matches faces from min_face_size up.

    Python floats, multiplied step by step, as the reference computes them: the level
    sizes int(side * scale + 1) must come out identical.
    """
    scale = PNET_CELL / min_face_size
    short_side = min(height, width) * scale
    scales = []
    while short_side >= PNET_CELL:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
        short_side *= PYRAMID_FACTOR
    return scales


def _level_proposals(scale: float, reg: np.ndarray, face: np.ndarray, threshold: float) -> np.ndarray:
    """One pyramid level's P-Net outputs, reg (4, h, w) and face probability (h, w) -> candidates
    (N, 9) float32: box, score, regression, after this scale's NMS."""
    ys, xs = np.nonzero(face >= np.float32(threshold))  # float32 ">=", as the reference
    scores = face[ys, xs]
    corner = np.stack([xs, ys], axis=1).astype(np.float32) * np.float32(2)
    s = np.float32(scale)
    # Each P-Net output cell sees a 12x12 window at stride 2 of the level.
    cand = np.empty((ys.size, 9), np.float32)
    cand[:, 0:2] = np.floor((corner + np.float32(1)) / s)
    cand[:, 2:4] = np.floor((corner + np.float32(PNET_CELL)) / s)
    cand[:, 4] = scores
    cand[:, 5:9] = reg[:, ys, xs].T
    return cand[_nms_iou(cand[:, :4], scores, NMS_PER_SCALE)]


def _proposals(per_scale: list[np.ndarray]) -> np.ndarray:
    """Every level's candidates of a photo -> squared candidate boxes (N, 4) float32."""
    cand = np.concatenate(per_scale)
    cand = cand[_nms_iou(cand[:, :4], cand[:, 4], NMS_ACROSS)]
    w = cand[:, 2] - cand[:, 0]
    h = cand[:, 3] - cand[:, 1]
    boxes = cand[:, :4] + cand[:, 5:9] * np.stack([w, h, w, h], axis=1)
    return _square(boxes)


def _crops(table: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(crops (M, 3, size, size), indices of the boxes they came from).

    The crop is the box truncated to integers and clipped to the image, as the
    reference does; boxes with nothing inside the image are dropped (the reference
    would fail on them).
    """
    height, width = table.shape[0] - 1, table.shape[1] - 1
    ints = np.trunc(boxes).astype(np.int64)
    x0 = np.maximum(ints[:, 0], 1) - 1
    y0 = np.maximum(ints[:, 1], 1) - 1
    x1 = np.minimum(ints[:, 2], width)
    y1 = np.minimum(ints[:, 3], height)
    valid = np.flatnonzero((x1 > x0) & (y1 > y0))
    top, left = y0[valid], x0[valid]
    return _resize_regions(table, top, left, y1[valid] - top, x1[valid] - left, size), valid


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each (x1, y1, x2, y2) box to a square around its centre (facenet-pytorch's rerec)."""
    x1, y1, x2, y2 = boxes.T
    w, h = x2 - x1, y2 - y1
    side = np.maximum(w, h)
    half = np.float32(0.5)
    nx1 = x1 + w * half - side * half
    ny1 = y1 + h * half - side * half
    return np.stack([nx1, ny1, nx1 + side, ny1 + side], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Later stages' box regression: offsets in units of the inclusive (+1) box size."""
    w = boxes[:, 2] - boxes[:, 0] + np.float32(1)
    h = boxes[:, 3] - boxes[:, 1] + np.float32(1)
    size = np.stack([w, h, w, h], axis=1)
    return boxes + offsets * size


@dataclass(frozen=True)
class _Photo:
    """One photo of a batch: its integral image and options, and the pyramid scales P-Net runs at."""

    table: np.ndarray
    options: DetectionOptions
    scales: list[float]

    def level_size(self, scale: float) -> tuple[int, int]:
        height, width = self.table.shape[0] - 1, self.table.shape[1] - 1
        return int(height * scale + 1), int(width * scale + 1)


@dataclass(frozen=True)
class _Level:
    """One pyramid level of a batch: its photo's index in the batch, its scale and size."""

    photo: int
    scale: float
    height: int
    width: int

    @property
    def outputs(self) -> tuple[int, int]:
        """P-Net's output cells: conv1 and its ceil-mode pool, then two 3x3 convolutions."""
        return (self.height - 1) // 2 - 4, (self.width - 1) // 2 - 4


def pyramid_work(height: int, width: int, min_face_size: int) -> int:
    """Pixels of P-Net's first, largest pyramid level, on which a ``min_face_size`` face is P-Net's
    12 px window: all levels come to about twice that (1 / (1 - 0.709^2)), R- and O-Net to little."""
    scale = PNET_CELL / min_face_size
    return int(height * scale + 1) * int(width * scale + 1)


class MtcnnDetector(FaceDetector):
    """Finds faces, with 5 landmarks each, in RGB photos, as facenet-pytorch's MTCNN does.

    With shape buckets on (``RuntimeOptions.buckets``), every net runs on a few input shapes
    known in advance (:meth:`shape_buckets`): the pyramid levels of a batch of photos are
    packed into square canvases for P-Net, and R- and O-Net's batches padded to a ladder.
    """

    smallest_face = PNET_CELL

    def __init__(self, models_dir: Path, runtime: RuntimeOptions) -> None:
        self.buckets = runtime.buckets
        # Without buckets, input sizes follow the photo (P-Net) and its count of candidates
        # (R-, O-Net): no arena, which would keep the largest run's memory for good. With
        # buckets, the arena serves the few fixed sizes.
        arena = self.buckets
        pnet_file = PACKED_PNET_FILE if self.buckets else "pnet.onnx"
        self.pnet = OnnxModel(models_dir / pnet_file, runtime, cpu_memory_arena=arena)
        self.rnet = OnnxModel(models_dir / "rnet.onnx", runtime, cpu_memory_arena=arena)
        self.onet = OnnxModel(models_dir / "onet.onnx", runtime, cpu_memory_arena=arena)
        self.pnet_canvases = {
            side: BatchLadder(max(1, PNET_RUN_PIXELS // side**2)) for side in PNET_CANVAS_SIDES
        }
        self.rnet_batches = BatchLadder(RNET_BATCH)
        self.onet_batches = BatchLadder(ONET_BATCH)

    @property
    def models(self) -> list[OnnxModel]:
        """P-Net (the packed one with buckets on), R-Net and O-Net."""
        return [self.pnet, self.rnet, self.onet]

    def work(self, height: int, width: int, min_face_size: int) -> int:
        return pyramid_work(height, width, min_face_size)

    def shape_buckets(self) -> list[ModelShapes]:
        """Every input shape of the three nets with buckets on; P-Net's canvases carry the mask
        as a 4th channel. A level longer than the largest canvas (only with ``detect_max_side``
        above 2730 px, or none) gets a canvas of its own, outside these."""
        canvases = tuple(
            shape for side, ladder in self.pnet_canvases.items() for shape in ladder.shapes((4, side, side))
        )
        return [
            ModelShapes(self.pnet, canvases),
            ModelShapes(self.rnet, self.rnet_batches.shapes((3, 24, 24))),
            ModelShapes(self.onet, self.onet_batches.shapes((3, 48, 48))),
        ]

    def detect(
        self,
        image: np.ndarray,  # HxWx3 uint8 RGB (grey HxW or HxWx1 and RGBA are accepted too)
        min_face_size: int = REFERENCE_MIN_FACE_SIZE,
        threshold: float = REFERENCE_THRESHOLDS[2],
        max_faces: int | None = None,
    ) -> list[Detection]:
        """Faces sorted by score, highest first; at most ``max_faces`` of them when given.

        ``threshold`` gates O-Net, whose probability is the score reported; P- and R-Net keep
        MTCNN's published cut-offs.
        """
        return self.detect_batch([image], [DetectionOptions(min_face_size, threshold, max_faces)])[0]

    def detect_batch(
        self, images: Sequence[np.ndarray], options: Sequence[DetectionOptions]
    ) -> list[list[Detection]]:
        """:meth:`detect` for several photos, each with its own options. With buckets, the photos
        share runs: their pyramid levels packed into a few canvases for P-Net, all their candidates
        in R- and O-Net's. Without (the CPU), one photo after another: shared runs' larger tensors
        measured slower there (docs/decisions/embedder.md)."""
        if self.buckets:
            return self._detect_together(images, options)
        return [
            faces
            for image, opts in zip(images, options, strict=True)
            for faces in self._detect_together([image], [opts])
        ]

    def _detect_together(
        self, images: Sequence[np.ndarray], options: Sequence[DetectionOptions]
    ) -> list[list[Detection]]:
        found: list[list[Detection]] = [[] for _ in images]
        photos: dict[int, _Photo] = {}
        for index, (image, opts) in enumerate(zip(images, options, strict=True)):
            rgb = as_rgb(image)
            scales = _pyramid_scales(rgb.shape[0], rgb.shape[1], opts.min_face_size)
            if scales:
                photos[index] = _Photo(_integral_image(rgb), opts, scales)
        levels = [
            _Level(index, scale, *photo.level_size(scale))
            for index, photo in photos.items()
            for scale in photo.scales
        ]
        maps = self._pnet_packed(photos, levels) if self.buckets else self._pnet_each(photos, levels)
        per_scale: dict[int, list[np.ndarray]] = defaultdict(list)
        for level, (reg, face) in zip(levels, maps, strict=True):
            cand = _level_proposals(level.scale, reg, face, REFERENCE_THRESHOLDS[0])
            if len(cand):
                per_scale[level.photo].append(cand)
        boxes = {index: _proposals(candidates) for index, candidates in per_scale.items()}
        boxes = self._refine(photos, boxes)
        for index, (photo_boxes, scores, points) in self._output(photos, boxes).items():
            ranked = np.argsort(-scores, kind="stable")[: photos[index].options.max_faces]
            photo_boxes, points = photo_boxes.astype(np.float64), points.astype(np.float64)
            found[index] = [
                Detection(box=photo_boxes[i], score=float(scores[i]), landmarks=points[i]) for i in ranked
            ]
        return found

    def _pnet_each(
        self, photos: dict[int, _Photo], levels: list[_Level]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """P-Net's (reg (4, h, w), face probability (h, w)) per level, one run per level."""
        maps = []
        for level in levels:
            reg, prob = self.pnet.run(_resize_image(photos[level.photo].table, level.height, level.width))
            maps.append((reg[0], prob[0, 1]))
        return maps

    def _pnet_packed(
        self, photos: dict[int, _Photo], levels: list[_Level]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`_pnet_each`'s outputs from levels packed into square canvases.

        Levels sit at even offsets, so the 2x2 pool windows align with each level's own; the mask
        channel marks each level's conv1 outputs, so a partial (ceil-mode) pool window at a
        level's edge sees nothing outside it; a level's output cells are read back from its place.
        """
        if not levels:
            return []
        sizes = [(level.height, level.width) for level in levels]
        side, ladder, placements, count = self._canvas_plan(sizes)
        maps: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(levels)
        on_canvas: dict[int, list[int]] = defaultdict(list)
        for number, placement in enumerate(placements):
            on_canvas[placement.canvas].append(number)
        for first in range(0, count, ladder.cap):
            run = range(first, min(first + ladder.cap, count))
            canvases = np.zeros((ladder.bucket(len(run)), 4, side, side), np.float32)
            canvases[:, 3] = PACKED_MASK_OFF
            placed = [number for canvas in run for number in on_canvas[canvas]]
            for number in placed:
                level, place = levels[number], placements[number]
                top, left, height, width = place.top, place.left, level.height, level.width
                pixels = _resize_image(photos[level.photo].table, height, width)[0]
                canvases[place.canvas - first, :3, top : top + height, left : left + width] = pixels
                canvases[place.canvas - first, 3, top : top + height - 2, left : left + width - 2] = 0
            reg, prob = self.pnet.run(canvases)
            for number in placed:
                place, (out_h, out_w) = placements[number], levels[number].outputs
                rows = slice(place.top // 2, place.top // 2 + out_h)
                cols = slice(place.left // 2, place.left // 2 + out_w)
                maps[number] = (
                    reg[place.canvas - first, :, rows, cols],
                    prob[place.canvas - first, 1, rows, cols],
                )
        return maps

    def _canvas_plan(self, sizes: list[tuple[int, int]]) -> tuple[int, BatchLadder, list[Placement], int]:
        """The canvas side, its ladder, each level's placement and the count of canvases: of the
        few smallest sides that hold the longest level, the one with the fewest pixels to run."""
        longest = max(max(size) for size in sizes)
        sides = [side for side in PNET_CANVAS_SIDES if side >= longest][:PNET_SIDE_CHOICES]
        if not sides:
            side = -(-longest // PNET_CANVAS_SIDES[-1]) * PNET_CANVAS_SIDES[-1]
            placements, count = pack(sizes, side)
            return side, BatchLadder(1), placements, count
        plans = []
        for side in sides:
            ladder = self.pnet_canvases[side]
            placements, count = pack(sizes, side)
            full, rest = divmod(count, ladder.cap)
            pixels = (full * ladder.cap + (ladder.bucket(rest) if rest else 0)) * side**2
            plans.append((pixels, side, ladder, placements, count))
        _, side, ladder, placements, count = min(plans, key=lambda plan: plan[:2])
        return side, ladder, placements, count

    def _stage(
        self,
        model: OnnxModel,
        ladder: BatchLadder,
        photos: dict[int, _Photo],
        boxes: dict[int, np.ndarray],
        size: int,
    ) -> dict[int, tuple[np.ndarray, list[np.ndarray]]]:
        """Every photo's boxes cropped and resized to ``size``, through ``model`` in shared runs:
        per photo, the indices of the boxes cropped and the model's outputs for them."""
        crops = {
            index: _crops(photos[index].table, photo_boxes, size) for index, photo_boxes in boxes.items()
        }
        crops = {index: crop for index, crop in crops.items() if crop[1].size}
        if not crops:
            return {}
        batch = np.concatenate([pixels for pixels, _ in crops.values()])
        outputs = ladder.run(model, batch, padded=True) if self.buckets else model.run(batch)
        split = [split_rows(output, [valid.size for _, valid in crops.values()]) for output in outputs]
        return {
            index: (valid, [parts[row] for parts in split])
            for row, (index, (_, valid)) in enumerate(crops.items())
        }

    def _refine(self, photos: dict[int, _Photo], boxes: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """R-Net: re-scores and regresses each photo's proposals; squared boxes (N, 4) float32."""
        refined = {}
        for index, (valid, (reg, prob)) in self._stage(
            self.rnet, self.rnet_batches, photos, boxes, 24
        ).items():
            score = prob[:, 1]
            passed = np.flatnonzero(
                score > np.float32(REFERENCE_THRESHOLDS[1])
            )  # float32 ">", as the reference
            photo_boxes, score, reg = boxes[index][valid[passed]], score[passed], reg[passed]
            keep = _nms_iou(photo_boxes, score, NMS_ACROSS)
            if keep.size:
                refined[index] = _square(_regress(photo_boxes[keep], reg[keep]))
        return refined

    def _output(
        self, photos: dict[int, _Photo], boxes: dict[int, np.ndarray]
    ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """O-Net: each photo's final boxes (N, 4), scores (N,), landmarks (N, 5, 2)."""
        final = {}
        for index, (valid, (reg, marks, prob)) in self._stage(
            self.onet, self.onet_batches, photos, boxes, 48
        ).items():
            score = prob[:, 1]
            passed = np.flatnonzero(score > np.float32(photos[index].options.threshold))
            photo_boxes, score = boxes[index][valid[passed]], score[passed]
            reg, marks = reg[passed], marks[passed]
            # Landmarks are relative to the box O-Net saw, before this stage's regression.
            one = np.float32(1)
            w = (photo_boxes[:, 2] - photo_boxes[:, 0] + one)[:, None]
            h = (photo_boxes[:, 3] - photo_boxes[:, 1] + one)[:, None]
            xs = w * marks[:, :5] + photo_boxes[:, 0:1] - one
            ys = h * marks[:, 5:] + photo_boxes[:, 1:2] - one
            points = np.stack([xs, ys], axis=2)
            photo_boxes = _regress(photo_boxes, reg)
            keep = _nms_min(photo_boxes, score, NMS_OUTPUT)
            final[index] = (photo_boxes[keep], score[keep], points[keep])
        return final
