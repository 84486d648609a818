"""Link faces across sampled frames into tracks, summarise each track, group tracks into people.

A track is one person's continuous appearance. Linking a face to a track needs appearance evidence
(cosine similarity of embeddings) and, unless the similarity is very high, spatial evidence too,
since faces of different people in one frame can look alike to the embedder. Boxes are compared
after enlarging them about their centres (a face moves far between samples), a change of shot
closes every track, and assignment is optimal (Hungarian). Tracks that break are cheap to repair
(grouping joins them into one person); a wrong link is not, so linking thresholds favour
splitting. Every threshold and the measurements behind it: docs/decisions/video.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from search_service.domain import Box, FaceObservation, Person, Track
from search_service.video.jpeg import encode_jpeg

# Faces are compared for sharpness at one size, so that size enters the quality score once.
_SHARPNESS_SIDE = 96
# Co-occurring tracks get this distance: average linkage then never joins their clusters.
_CANNOT_LINK = 1e6
# Frames are compared for scene cuts at this size, by a hue x saturation histogram: cheap (well under
# a millisecond per sample) and blind to the motion of a face, sensitive to a change of shot.
_CUT_SIZE = (160, 90)
_CUT_BINS = (16, 8)


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of linking, grouping and cut detection; measured values: docs/decisions/video.md."""

    # Similarity needed to link a face to a track nearby (see box_expand / min_overlap).
    link_similarity: float = 0.88
    # Similarity that links a face to a track wherever it is.
    far_link_similarity: float = 0.96
    # Boxes are enlarged by this factor about their centres before IoU, to tolerate motion.
    box_expand: float = 2.0
    min_overlap: float = 0.1
    # A track survives this many consecutive samples without its face, then it is closed.
    max_missed: int = 2
    # Stored vectors per track besides the mean: the index grows with tracks, not with frames.
    max_representatives: int = 4
    # A further representative must be at least this cosine distance from those already chosen.
    representative_min_distance: float = 0.04
    # Tracks whose mean embeddings are this similar (average linkage) are one person: only
    # near-identical tracks, since a wrong merge costs more than a missed one.
    group_similarity: float = 0.98
    # Consecutive samples whose hue x saturation histograms correlate less than this are a change of
    # shot (-1 turns the check off).
    scene_cut_correlation: float = 0.7
    thumbnail_margin: float = 0.25  # of the box side, added on every side of the crop
    thumbnail_max_side: int = 256
    thumbnail_jpeg_quality: int = 90


def box_iou(a: Box, b: Box, expand: float = 1.0) -> float:
    """IoU of two x1y1x2y2 boxes after scaling each by ``expand`` about its centre."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = _expanded(a, expand), _expanded(b, expand)
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def frontality(landmarks: np.ndarray) -> float:
    """1 for a frontal face, toward 0 as it turns: the nose's distance to each eye, and to each
    mouth corner, is equal when frontal and lopsided in profile. Independent of scale and roll."""
    eye_l, eye_r, nose, mouth_l, mouth_r = np.asarray(landmarks, dtype=np.float64)
    ratios: list[float] = []
    for left, right in ((eye_l, eye_r), (mouth_l, mouth_r)):
        dl, dr = float(np.linalg.norm(nose - left)), float(np.linalg.norm(nose - right))
        ratios.append(min(dl, dr) / max(dl, dr) if max(dl, dr) > 0 else 0.0)
    return sum(ratios) / len(ratios)


def face_quality(face: FaceObservation, image_rgb: np.ndarray, image_scale: float = 1.0) -> float:
    """How good a thumbnail (and a sample of the person) this face is: side x sharpness x frontality.

    side: sqrt of the box area in source pixels. Sharpness: standard deviation of the Laplacian of
    the face resized to a fixed size (so blur counts, not resolution). Frontality: see above (1 when
    there are no landmarks). Each
    factor scales roughly linearly, so none dominates the product. ``image_scale`` is image pixels
    per source pixel (below 1 when frames were downscaled before detection).
    """
    x1, y1, x2, y2 = face.box
    side = float(np.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1)))
    crop = _crop(image_rgb, face.box, image_scale, margin=0.0)
    if side == 0 or crop.size == 0:
        return 0.0
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (_SHARPNESS_SIDE, _SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).std())
    pose = frontality(face.landmarks) if face.landmarks is not None else 1.0
    return side * sharpness * pose


def select_representatives(embeddings: np.ndarray, k: int, min_distance: float) -> np.ndarray:
    """Up to k rows of ``embeddings`` that cover the track's appearances (poses, lighting).

    Farthest-point selection seeded with the medoid (for unit vectors, the row most similar to the
    sum of all rows): each further pick is the face least similar to everything picked so far, and
    picking stops once that face is within ``min_distance`` of a pick, so a static shot yields one
    vector. O(n k) time and memory: no n x n matrix for hour-long tracks.
    """
    medoid = int(np.argmax(embeddings @ embeddings.sum(axis=0)))
    chosen = [medoid]
    closest = embeddings @ embeddings[medoid]
    while len(chosen) < k:
        candidate = int(np.argmin(closest))
        if 1.0 - closest[candidate] < min_distance:
            break
        chosen.append(candidate)
        closest = np.maximum(closest, embeddings @ embeddings[candidate])
    return embeddings[chosen].copy()


def merge_ranges(ranges: Sequence[tuple[float, float]], max_gap: float) -> list[tuple[float, float]]:
    """Sort and merge time ranges that overlap or are at most ``max_gap`` seconds apart."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + max_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass
class _OpenTrack:
    """A track being built; embeddings are kept until it closes, then reduced to representatives."""

    id: int
    start: float
    last_time: float
    last_box: Box
    last_embedding: np.ndarray
    embedding_sum: np.ndarray
    best_quality: float
    best_time: float
    best_box: Box
    best_score: float
    best_crop: np.ndarray
    embeddings: list[np.ndarray] = field(default_factory=list)
    missed: int = 0


class FaceTracker:
    """Feed it every sampled frame in order with :meth:`update`, then call :meth:`finish` once."""

    def __init__(
        self,
        sample_interval: float,
        config: TrackerConfig | None = None,
        *,
        image_scale: float = 1.0,
        duration: float = 0.0,
    ) -> None:
        """``sample_interval``: seconds between samples; ``image_scale``: image pixels per source pixel
        of the frames given to update (boxes are in source pixels); ``duration``: clamps track ends
        (0 when unknown)."""
        self.config = config or TrackerConfig()
        self.sample_interval = sample_interval
        self.image_scale = image_scale
        self.duration = duration
        self._open: list[_OpenTrack] = []
        self._closed: list[_OpenTrack] = []
        self._cooccurring: set[tuple[int, int]] = set()
        self._next_id = 0
        self._previous_histogram: np.ndarray | None = None

    def update(self, t: float, faces: Sequence[FaceObservation], image_rgb: np.ndarray) -> None:
        """Link this sample's faces to open tracks, start tracks for the rest, close stale tracks."""
        if self._scene_cut(image_rgb):
            self._closed.extend(self._open)
            self._open = []
        assigned: dict[int, int] = {}  # face -> position in self._open
        if self._open and faces:
            gain = np.full((len(self._open), len(faces)), -np.inf)
            for i, track in enumerate(self._open):
                for j, face in enumerate(faces):
                    gain[i, j] = self._link_gain(track, face)
            rows, cols = linear_sum_assignment(np.where(np.isfinite(gain), gain, -1e9), maximize=True)
            assigned = {int(j): int(i) for i, j in zip(rows, cols, strict=True) if np.isfinite(gain[i, j])}
        linked = set(assigned.values())
        for i, track in enumerate(self._open):
            if i not in linked:
                track.missed += 1
        present: list[int] = []
        for j, face in enumerate(faces):
            quality = face_quality(face, image_rgb, self.image_scale)
            if j in assigned:
                track = self._open[assigned[j]]
                self._extend(track, t, face, quality, image_rgb)
            else:
                track = self._start(t, face, quality, image_rgb)
            present.append(track.id)
        self._cooccurring.update(itertools.combinations(sorted(present), 2))
        stale = [track for track in self._open if track.missed > self.config.max_missed]
        self._closed.extend(stale)
        self._open = [track for track in self._open if track.missed <= self.config.max_missed]

    def finish(self) -> list[Person]:
        """Close every track, summarise each, and group them into people."""
        raw = sorted(self._closed + self._open, key=lambda t: (t.start, t.id))
        self._open, self._closed = [], []
        tracks = [self._summarise(index, track) for index, track in enumerate(raw)]
        labels = self._group([t.mean_embedding for t in tracks], [t.id for t in raw])
        members: dict[int, list[Track]] = {}
        for label, track in zip(labels, tracks, strict=True):
            members.setdefault(label, []).append(track)
        # Same tolerance as within a track: up to max_missed samples without the face (ranges already
        # reach half an interval past the last sample; the other half absorbs timestamp jitter).
        max_gap = (self.config.max_missed + 1) * self.sample_interval
        groups = sorted(members.values(), key=lambda g: g[0].start)
        return [
            Person(index, merge_ranges([(t.start, t.end) for t in group], max_gap), group)
            for index, group in enumerate(groups)
        ]

    def _scene_cut(self, image_rgb: np.ndarray) -> bool:
        """Whether this sample starts a new shot: then every open track ends, whatever the faces say.

        Needed because a cut often frames the next person where the last one was, and two people's
        faces can be as similar as link_similarity (see TrackerConfig).
        """
        threshold = self.config.scene_cut_correlation
        if threshold <= -1.0 or image_rgb.size == 0:
            return False
        small = cv2.resize(image_rgb, _CUT_SIZE, interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        histogram = cv2.calcHist([hsv], [0, 1], None, list(_CUT_BINS), [0, 180, 0, 256])
        previous, self._previous_histogram = self._previous_histogram, histogram
        if previous is None:
            return False
        return bool(cv2.compareHist(previous, histogram, cv2.HISTCMP_CORREL) < threshold)

    def _link_gain(self, track: _OpenTrack, face: FaceObservation) -> float:
        """Similarity plus overlap when the pair may be linked, else -inf."""
        mean = track.embedding_sum / np.linalg.norm(track.embedding_sum)
        # The latest face follows gradual pose change; the mean resists one bad frame.
        similarity = float(max(track.last_embedding @ face.embedding, mean @ face.embedding))
        cfg = self.config
        overlap = box_iou(track.last_box, face.box, cfg.box_expand)
        near = overlap >= cfg.min_overlap
        if similarity >= cfg.far_link_similarity or (near and similarity >= cfg.link_similarity):
            return similarity + overlap
        return -np.inf

    def _start(self, t: float, face: FaceObservation, quality: float, image_rgb: np.ndarray) -> _OpenTrack:
        track = _OpenTrack(
            id=self._next_id,
            start=t,
            last_time=t,
            last_box=face.box,
            last_embedding=face.embedding,
            embedding_sum=face.embedding.astype(np.float64),
            best_quality=quality,
            best_time=t,
            best_box=face.box,
            best_score=face.score,
            best_crop=self._thumbnail_crop(image_rgb, face.box),
            embeddings=[face.embedding],
        )
        self._next_id += 1
        self._open.append(track)
        return track

    def _extend(
        self, track: _OpenTrack, t: float, face: FaceObservation, quality: float, image_rgb: np.ndarray
    ) -> None:
        track.last_time, track.last_box, track.last_embedding = t, face.box, face.embedding
        track.embedding_sum += face.embedding
        track.embeddings.append(face.embedding)
        track.missed = 0
        if quality > track.best_quality:
            track.best_quality, track.best_time, track.best_box = quality, t, face.box
            track.best_score = face.score
            track.best_crop = self._thumbnail_crop(image_rgb, face.box)

    def _thumbnail_crop(self, image_rgb: np.ndarray, box: Box) -> np.ndarray:
        # A copy: the frame itself must not stay alive for the length of the track.
        return _crop(image_rgb, box, self.image_scale, self.config.thumbnail_margin).copy()

    def _summarise(self, index: int, track: _OpenTrack) -> Track:
        cfg = self.config
        end = track.last_time + self.sample_interval / 2
        if self.duration > 0:
            end = max(track.last_time, min(end, self.duration))
        embeddings = np.stack(track.embeddings).astype(np.float32)
        return Track(
            index=index,
            start=track.start,
            end=end,
            faces=len(track.embeddings),
            best_time=track.best_time,
            best_box=track.best_box,
            best_quality=track.best_quality,
            best_score=track.best_score,
            thumbnail_jpeg=(
                encode_jpeg(track.best_crop, cfg.thumbnail_jpeg_quality, cfg.thumbnail_max_side)
                if track.best_crop.size
                else b""
            ),
            representatives=select_representatives(
                embeddings, cfg.max_representatives, cfg.representative_min_distance
            ),
            mean_embedding=(track.embedding_sum / np.linalg.norm(track.embedding_sum)).astype(np.float32),
        )

    def _group(self, means: list[np.ndarray], ids: list[int]) -> list[int]:
        """Agglomerative clustering (average linkage) of track means, cut at 1 - group_similarity.

        Two tracks seen in the same frame are two people, whatever their embeddings say.
        """
        if len(means) < 2:
            return [0] * len(means)
        matrix = np.stack(means).astype(np.float64)
        distances = np.clip(1.0 - matrix @ matrix.T, 0.0, 2.0)
        position = {track_id: i for i, track_id in enumerate(ids)}
        for a, b in self._cooccurring:
            distances[position[a], position[b]] = distances[position[b], position[a]] = _CANNOT_LINK
        condensed = distances[np.triu_indices(len(means), k=1)]
        tree = linkage(condensed, method="average")
        labels = fcluster(tree, t=1.0 - self.config.group_similarity, criterion="distance")
        return [int(label) for label in labels]


def _expanded(box: Box, factor: float) -> Box:
    x1, y1, x2, y2 = box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def _crop(image_rgb: np.ndarray, box: Box, image_scale: float, margin: float) -> np.ndarray:
    """The box (in source pixels) plus ``margin`` x its side on each side, clipped to the image."""
    x1, y1, x2, y2 = (v * image_scale for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    height, width = image_rgb.shape[:2]
    left, top = max(0, int(np.floor(x1 - mx))), max(0, int(np.floor(y1 - my)))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    return image_rgb[top:bottom, left:right]
