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

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from embedder_service.models.base import OnnxModel
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


@dataclass(eq=False)  # identity equality: a generated == would compare arrays, which raises
class Detection:
    box: np.ndarray  # (4,) x1, y1, x2, y2, float
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye (image left), right eye, nose, mouth left, mouth right


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


class MtcnnDetector:
    """Finds faces, with 5 landmarks each, in RGB photos, as facenet-pytorch's MTCNN does."""

    smallest_face = PNET_CELL

    def __init__(self, models_dir: Path, runtime: RuntimeOptions) -> None:
        # Input sizes follow the photo (P-Net) and its count of candidates (R-, O-Net): no arena,
        # which would keep the largest run's memory for good.
        self.pnet = OnnxModel(models_dir / "pnet.onnx", runtime, cpu_memory_arena=False)
        self.rnet = OnnxModel(models_dir / "rnet.onnx", runtime, cpu_memory_arena=False)
        self.onet = OnnxModel(models_dir / "onet.onnx", runtime, cpu_memory_arena=False)

    @property
    def providers_in_use(self) -> list[str]:
        """The three nets share one provider choice; P-Net's session reports it."""
        return self.pnet.providers_in_use

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
        thresholds = (REFERENCE_THRESHOLDS[0], REFERENCE_THRESHOLDS[1], threshold)
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        scales = _pyramid_scales(height, width, min_face_size)
        if not scales:
            return []
        table = _integral_image(rgb)
        boxes = self._proposals(table, scales, thresholds[0])
        if len(boxes):
            boxes = self._refine(table, boxes, height, width, thresholds[1])
        if not len(boxes):
            return []
        boxes, scores, points = self._output(table, boxes, height, width, thresholds[2])
        ranked = np.argsort(-scores, kind="stable")[:max_faces]
        boxes, points = boxes.astype(np.float64), points.astype(np.float64)
        return [Detection(box=boxes[i], score=float(scores[i]), landmarks=points[i]) for i in ranked]

    def _proposals(self, table: np.ndarray, scales: list[float], threshold: float) -> np.ndarray:
        """P-Net over the pyramid: squared candidate boxes (N, 4) float32."""
        height, width = table.shape[0] - 1, table.shape[1] - 1
        per_scale: list[np.ndarray] = []
        for scale in scales:
            out_h, out_w = int(height * scale + 1), int(width * scale + 1)
            reg, prob = self.pnet.run(_resize_image(table, out_h, out_w))
            face = prob[0, 1]
            ys, xs = np.nonzero(face >= np.float32(threshold))  # float32 ">=", as the reference
            if ys.size:
                scores = face[ys, xs]
                corner = np.stack([xs, ys], axis=1).astype(np.float32) * np.float32(2)
                s = np.float32(scale)
                # Each P-Net output cell sees a 12x12 window at stride 2 of the level.
                cand = np.empty((ys.size, 9), np.float32)
                cand[:, 0:2] = np.floor((corner + np.float32(1)) / s)
                cand[:, 2:4] = np.floor((corner + np.float32(PNET_CELL)) / s)
                cand[:, 4] = scores
                cand[:, 5:9] = reg[0][:, ys, xs].T
                per_scale.append(cand[_nms_iou(cand[:, :4], scores, NMS_PER_SCALE)])
        if not per_scale:
            return np.empty((0, 4), np.float32)
        cand = np.concatenate(per_scale)
        cand = cand[_nms_iou(cand[:, :4], cand[:, 4], NMS_ACROSS)]
        w = cand[:, 2] - cand[:, 0]
        h = cand[:, 3] - cand[:, 1]
        boxes = cand[:, :4] + cand[:, 5:9] * np.stack([w, h, w, h], axis=1)
        return _square(boxes)

    def _crops(
        self, table: np.ndarray, boxes: np.ndarray, height: int, width: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(crops (M, 3, size, size), indices of the boxes they came from).

        The crop is the box truncated to integers and clipped to the image, as the
        reference does; boxes with nothing inside the image are dropped (the reference
        would fail on them).
        """
        ints = np.trunc(boxes).astype(np.int64)
        x0 = np.maximum(ints[:, 0], 1) - 1
        y0 = np.maximum(ints[:, 1], 1) - 1
        x1 = np.minimum(ints[:, 2], width)
        y1 = np.minimum(ints[:, 3], height)
        valid = np.flatnonzero((x1 > x0) & (y1 > y0))
        top, left = y0[valid], x0[valid]
        return _resize_regions(table, top, left, y1[valid] - top, x1[valid] - left, size), valid

    def _refine(
        self, table: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float
    ) -> np.ndarray:
        """R-Net: re-scores and regresses the proposals; squared boxes (N, 4) float32."""
        crops, valid = self._crops(table, boxes, height, width, 24)
        if not valid.size:
            return np.empty((0, 4), np.float32)
        reg, prob = self.rnet.run(crops)
        score = prob[:, 1]
        passed = np.flatnonzero(score > np.float32(threshold))  # float32 ">", as the reference
        boxes, score, reg = boxes[valid[passed]], score[passed], reg[passed]
        keep = _nms_iou(boxes, score, NMS_ACROSS)
        return _square(_regress(boxes[keep], reg[keep]))

    def _output(
        self, table: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net: final boxes (N, 4), scores (N,), landmarks (N, 5, 2)."""
        crops, valid = self._crops(table, boxes, height, width, 48)
        if not valid.size:
            return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty((0, 5, 2), np.float32)
        reg, marks, prob = self.onet.run(crops)
        score = prob[:, 1]
        passed = np.flatnonzero(score > np.float32(threshold))
        boxes, score, reg, marks = boxes[valid[passed]], score[passed], reg[passed], marks[passed]
        # Landmarks are relative to the box O-Net saw, before this stage's regression.
        one = np.float32(1)
        w = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
        xs = w * marks[:, :5] + boxes[:, 0:1] - one
        ys = h * marks[:, 5:] + boxes[:, 1:2] - one
        points = np.stack([xs, ys], axis=2)
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, score, NMS_OUTPUT)
        return boxes[keep], score[keep], points[keep]
