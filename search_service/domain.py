"""Plain records passed between the embedder client, the services and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search_service.index.base import Source

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the (EXIF-rotated) image
TimeRange = tuple[float, float]  # start, end in seconds from the start of a video
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
UNFINISHED_STATES: tuple[JobState, ...] = ("queued", "running")


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
    name: str
    dimension: int


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
