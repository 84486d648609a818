"""What the storage tests feed the store: staged video uploads and video analyses, and a look at
the files under a data directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from search_service.domain import Person, StagedFile, StageTimings, Track, VideoAnalysis
from search_service.storage import Storage
from tests.search.fakes import face_vector


def stored_files(data_dir: Path) -> list[Path]:
    """Every file under the data directory's media folder: stored ones and temporary ones."""
    return sorted(path for path in (data_dir / "media").rglob("*") if path.is_file())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staged_video(storage: Storage, data: bytes, filename: str = "clip.mp4") -> StagedFile:
    """An upload streamed into the store's staging file, as the upload route leaves it."""
    with storage.videos.staging_file() as file:
        file.write(data)
    return StagedFile(Path(file.name), filename, "video/mp4", len(data), digest(data))


def track(index: int, start: float, end: float, vectors: int, thumbnail: bytes = b"jpeg") -> Track:
    embeddings = np.stack([face_vector("vid", bytes([index]), i) for i in range(vectors)])
    return Track(
        index=index,
        start=start,
        end=end,
        faces=vectors + 1,
        best_time=start,
        best_box=(1.0, 2.0, 3.0, 4.0),
        best_quality=1.0,
        best_score=0.98,
        thumbnail_jpeg=thumbnail + bytes([index]),
        representatives=embeddings,
        mean_embedding=embeddings[0],
    )


def video_analysis() -> VideoAnalysis:
    """Person 0 twice (1-2.5 s with two vectors, 6-8 s with one), person 1 at 3-4 s: four vectors,
    three tracks, each with a thumbnail of its own."""
    first, other, second = track(0, 1.0, 2.5, 2), track(1, 3.0, 4.0, 1), track(2, 6.0, 8.0, 1)
    people = [Person(0, [(1.0, 2.5), (6.0, 8.0)], [first, second]), Person(1, [(3.0, 4.0)], [other])]
    return VideoAnalysis(12.5, 25.0, 640, 360, 2.0, 25, 9, people, StageTimings(0.1, 0.2, 0.01, 0.4))


def face_count(storage: Storage) -> int:
    """Faces in the store, as an index build reads them."""
    return sum(len(batch) for batch in storage.faces.face_batches())
