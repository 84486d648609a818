"""Plain records passed between the layers: embedder client, video pipeline, services, storage, index.

Everything here is data: no I/O, no HTTP, no imports from the rest of the service. Every other
module may import this one; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the (EXIF-rotated) image
TimeRange = tuple[float, float]  # start, end in seconds from the start of a video
Source = Literal["image", "video"]
SOURCES: tuple[Source, ...] = ("image", "video")
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
ScoreKind = Literal["cosine", "as_norm"]
UNFINISHED_STATES: tuple[JobState, ...] = ("queued", "running")
FINISHED_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class DetectedFace:
    box: Box
    score: float
    landmarks: list[list[float]] | None
    embedding: np.ndarray  # float32, L2-normalised


@dataclass(frozen=True)
class DetectedImage:
    width: int
    height: int
    faces: list[DetectedFace]


@dataclass(frozen=True)
class EmbeddingModel:
    """Which model made a set of vectors: vectors of different models must never be compared."""

    name: str
    dimension: int


@dataclass(frozen=True)
class ModelThresholds:
    """Where an embedding model calls two faces one person, as calibrated for it (they travel with
    the model, since another model needs others): a cosine similarity, and an AS-norm score
    against the store's cohort (None where it was not calibrated)."""

    cosine: float
    normalized: float | None = None


@dataclass(frozen=True)
class Detection:
    """The embedder's answer for a batch of images: the faces, and the model that embedded them."""

    model: EmbeddingModel
    thresholds: ModelThresholds
    images: list[DetectedImage]


@dataclass(frozen=True)
class Upload:
    """One uploaded photo, read into memory (its size was bounded while it streamed in)."""

    filename: str
    data: bytes
    sha256: str
    content_type: str


@dataclass(frozen=True)
class NewImage:
    upload: Upload
    collection: str
    external_id: str | None
    metadata: dict[str, Any]
    detected: DetectedImage


@dataclass(frozen=True)
class FaceRecord:
    id: int
    box: Box
    score: float
    landmarks: list[list[float]] | None


@dataclass(frozen=True)
class MediaRecord:
    """What photos and videos share."""

    id: int
    collection: str
    external_id: str | None
    sha256: str
    filename: str | None
    content_type: str
    size_bytes: int
    width: int | None  # videos: known once a job has finished
    height: int | None
    created_at: str


@dataclass(frozen=True)
class ImageRecord(MediaRecord):
    metadata: dict[str, Any]
    faces: list[FaceRecord] = field(default_factory=list)


@dataclass(frozen=True)
class StagedFile:
    """An upload streamed to a temporary file under the data directory, hashed on the way."""

    path: Path
    filename: str
    content_type: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class SubmittedVideo:
    video_id: int
    job_id: int
    duplicate: bool  # the collection already held this video (same bytes)


@dataclass(frozen=True)
class JobRecord:
    """One ingest run of a video; ``attempts`` counts starts (a restart re-runs it from scratch)."""

    id: int
    video_id: int
    state: JobState
    progress: float
    frames_processed: int
    faces_found: int
    error: str | None
    attempts: int
    timings: dict[str, float] | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class TrackRecord:
    id: int
    start: float
    end: float
    faces: int
    best_time: float
    box: Box  # the best face, at best_time
    has_thumbnail: bool


@dataclass(frozen=True)
class PersonRecord:
    index: int
    time_ranges: list[TimeRange]
    tracks: list[TrackRecord]
    thumbnail_track: int | None  # id of the track whose best face shows this person best
    face_id: int  # a stored vector of that track: the person as a search query (POST /search?face_id=)


@dataclass(frozen=True)
class VideoRecord(MediaRecord):
    duration: float | None  # known once a job has finished
    fps: float | None
    job: JobRecord | None  # the latest
    people: list[PersonRecord] = field(default_factory=list)


@dataclass(frozen=True)
class HitSource:
    """Where an indexed face comes from, as a search hit reports it."""

    face_id: int
    media_id: int
    source: Source
    external_id: str | None
    collection: str
    box: Box
    # The photo's or video's (as MediaRecord's): a client places and names a hit without fetching it.
    filename: str | None
    width: int | None
    height: int | None
    # Videos: the person's appearances, and the track frame the vector's box belongs to.
    time_ranges: list[TimeRange] | None
    person: int | None = None
    track_id: int | None = None
    time_s: float | None = None


@dataclass(frozen=True)
class CollectionStats:
    name: str
    images: int
    videos: int
    faces: int


@dataclass(frozen=True)
class FaceBatch:
    """Faces to index, column-wise so that millions can be loaded without one object per face.

    ``vectors`` are float32 and L2-normalised, so inner product is cosine similarity.
    """

    face_ids: np.ndarray
    media_ids: np.ndarray
    sources: Sequence[Source]
    collections: Sequence[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.face_ids)
        if not (len(self.media_ids) == len(self.sources) == len(self.collections) == len(self.vectors) == n):
            raise ValueError("FaceBatch columns differ in length")
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, d), got shape {self.vectors.shape}")

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class PersonVectors:
    """The stored vectors of one person in a video (rows), and the start second of each one's track."""

    track_starts: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class StoredImage:
    image: ImageRecord
    duplicate: bool  # the collection already held these bytes


# -- video analysis: what the video pipeline produces and storage keeps ---------------------------


@dataclass(frozen=True)
class FaceObservation:
    """One face as the detector/embedder reports it, in pixels of the frame it was found in."""

    box: Box
    score: float  # detection confidence
    # (5, 2) x, y: image-left eye, image-right eye, nose, mouth left, mouth right; None if not given
    landmarks: np.ndarray | None
    embedding: np.ndarray  # (D,) L2-normalised


@dataclass(frozen=True)
class Track:
    """One person's continuous appearance in a video, summarised."""

    index: int  # tracks numbered by start time within the video
    start: float  # seconds: the first sample with the face
    end: float  # seconds: the last sample with the face plus half a sample interval
    faces: int  # observations linked into the track
    best_time: float  # seconds: the sample with the best face
    best_box: Box  # the best face's box at best_time, in source pixels
    best_quality: float  # see video.tracker.face_quality
    best_score: float  # detection confidence of the best face
    thumbnail_jpeg: bytes  # the best face with a margin; empty if its box lies outside the frame
    representatives: np.ndarray  # (k, D), 1 <= k <= max_representatives, actual face embeddings
    mean_embedding: np.ndarray  # (D,) mean of the track's embeddings, L2-normalised


@dataclass(frozen=True)
class Person:
    """Tracks of one video judged to be one person."""

    index: int  # people numbered by first appearance within the video
    time_ranges: list[TimeRange]  # sorted, disjoint
    tracks: list[Track]

    @property
    def best_track(self) -> Track:
        return max(self.tracks, key=lambda t: t.best_quality)


@dataclass(frozen=True)
class StageTimings:
    """Wall seconds per stage; total also covers the probe and callbacks."""

    decode: float  # demux, decode, RGB conversion (and downscaling) of sampled frames
    detect_embed: float  # inside detect_and_embed
    tracking: float  # linking, face quality, thumbnails, representatives, grouping
    total: float


@dataclass(frozen=True)
class VideoAnalysis:
    duration: float  # seconds (0.0 when the container does not say)
    fps: float
    width: int  # display orientation, source pixels (boxes are in these coordinates)
    height: int
    sample_fps: float
    frames_sampled: int
    faces_seen: int  # face observations over all sampled frames
    people: list[Person]
    timings: StageTimings

    @property
    def tracks(self) -> list[Track]:
        return sorted((t for p in self.people for t in p.tracks), key=lambda t: t.index)


# -- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    k: int
    # A cosine: the search ranks by cosine. None: the setting, else the model's threshold of the
    # score kind in use (AS-norm once the cohort is full enough).
    threshold: float | None
    collection: str | None
    source: Source | None  # None: photos and videos


@dataclass(frozen=True)
class RankedHit:
    score: float  # cosine similarity
    match: bool  # the score of the search's kind reaches the threshold
    normalized_score: float | None  # AS-norm searches: what ranks and matches
    where: HitSource  # the best-scoring face; videos: of the best-matching person
    time_ranges: list[TimeRange] | None  # videos: every range of the matched people, merged
    range_scores: list[float] | None  # videos: per time range, the query's best similarity


@dataclass(frozen=True)
class QueryFaceResult:
    """One face of a query photo, or one person of a query clip (then: their clearest face)."""

    box: Box  # clips: in source pixels of the frame at best_time
    score: float  # detection confidence
    hits: list[RankedHit]
    # Clips only: where the person appears in the query clip, and their clearest face.
    time_ranges: list[TimeRange] | None = None
    best_time: float | None = None
    thumbnail_jpeg: bytes | None = None


@dataclass(frozen=True)
class StoredFace:
    """A stored face as a search query (``POST /search`` with ``face_id``)."""

    where: HitSource
    score: float  # detection confidence
    vector: np.ndarray  # (D,) float32, L2-normalised
    # The query itself, left out of its hits: the face; for a video, every vector of its person.
    own_face_ids: frozenset[int]


@dataclass(frozen=True)
class SearchResult:
    threshold: float  # the match threshold applied, in units of score_kind
    score_kind: ScoreKind
    faces: list[QueryFaceResult]
    origin: HitSource | None = None  # a search by stored face: where that face is


@dataclass(frozen=True)
class Thumbnail:
    """A photo scaled down for a grid. ``jpeg`` is None when the client holds this version (its
    ``etag``) already."""

    etag: str
    jpeg: bytes | None


@dataclass(frozen=True)
class CohortMembers:
    """The faces of the score cohort (ids, and their vectors as rows), read at one version."""

    version: int
    face_ids: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class CohortStatus:
    """How full the score cohort is: searches normalise scores from ``minimum`` members on."""

    members: int
    size: int
    minimum: int
    enabled: bool  # SEARCH_SCORE_NORMALIZATION

    @property
    def active(self) -> bool:
        return self.enabled and self.members >= self.minimum


@dataclass(frozen=True)
class DiskSpace:
    """Free space on the data directory's disk, against the floor below which uploads are refused."""

    free_bytes: int
    min_free_bytes: int
    reserve_bytes: int  # held in reserve for deletes on a full disk; 0 while released

    @property
    def low(self) -> bool:
        return self.free_bytes < self.min_free_bytes


@dataclass(frozen=True)
class HealthReport:
    """The state of the index, the reachability of the embedder and the free disk space, as
    ``/healthz`` reports them."""

    index_backend: str
    index_ok: bool
    faces: int
    index_details: dict[str, Any]
    embedder_model: EmbeddingModel | None  # None: the embedder does not answer
    thresholds: ModelThresholds | None
    embedder_problem: str | None
    disk: DiskSpace
    cohort: CohortStatus
