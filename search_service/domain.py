"""Plain records passed between the embedder client, the services and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_service.index.base import Source

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the (EXIF-rotated) image


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
class ImageRecord:
    id: int
    collection: str
    external_id: str | None
    sha256: str
    filename: str | None
    content_type: str
    size_bytes: int
    width: int | None
    height: int | None
    metadata: dict[str, Any]
    created_at: str
    faces: list[FaceRecord] = field(default_factory=list)


@dataclass(frozen=True)
class HitSource:
    """Where an indexed face comes from, as a search hit reports it."""

    face_id: int
    media_id: int
    source: Source
    external_id: str | None
    collection: str
    box: Box
    time_ranges: list[tuple[float, float]] | None  # videos: the person's appearances


@dataclass(frozen=True)
class CollectionStats:
    name: str
    images: int
    videos: int
    faces: int
