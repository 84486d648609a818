"""Durable storage, the source of truth: one SQLite database plus content-addressed files.

Split by aggregate: ``images``, ``videos`` (with their analyses), ``jobs``, ``faces`` (read
models and the index feed), ``cohort`` (the faces search scores are normalised against),
``embedding_model``; ``database`` and ``blobs`` are the plumbing.
Every face row carries its embedding, so any vector index can be rebuilt from here alone. Writes
follow one order: file durable, then rows committed, then the caller acknowledges; a crash loses
nothing acknowledged, and its only debris, an unreferenced file, is swept at the next open.
A full disk refuses writes (InsufficientStorageError) but not deletes or reads: ``space`` holds a
reserve for them. Storage takes and returns the plain records of ``search_service.domain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog

from search_service.storage.blobs import BlobStore
from search_service.storage.cohort import CohortRepository
from search_service.storage.database import FILE_NAME, Database
from search_service.storage.embedding_model import EmbeddingModelRecord
from search_service.storage.faces import FaceRepository
from search_service.storage.faults import FaultHook, no_faults
from search_service.storage.images import ImageRepository
from search_service.storage.jobs import JobRepository
from search_service.storage.media import referenced_files
from search_service.storage.space import RESERVE_FILE, Reserve, free_bytes, watch_free_bytes
from search_service.storage.videos import VideoRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Storage:
    data_dir: Path
    database: Database
    images: ImageRepository
    videos: VideoRepository
    jobs: JobRepository
    faces: FaceRepository
    cohort: CohortRepository
    embedding_model: EmbeddingModelRecord

    @classmethod
    def open(
        cls, data_dir: Path, faults: FaultHook = no_faults, *, sweep: bool = True, reserve_bytes: int = 0
    ) -> Storage:
        """Open (creating if needed) the store in ``data_dir`` and sweep crash debris; then hold
        ``reserve_bytes`` of the disk in reserve for deletes (when there is room: a store opens on
        a full disk too, and serves reads and deletes).

        ``sweep=False`` for tools that may run beside a live service (re-indexing): there an
        unreferenced file may be an upload in progress, not debris.
        """
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # photos, faces: the owner's alone
        # Allocated after each write through reserve.freeing, the first being opening the database.
        reserve = Reserve(data_dir / RESERVE_FILE, reserve_bytes)
        database = Database(data_dir / FILE_NAME, reserve)
        blobs = BlobStore(data_dir / "media", faults)
        if sweep:
            removed = reserve.freeing(partial(blobs.sweep, referenced_files(database)))
            if removed:
                log.info("removed unreferenced files left by an interrupted write", files=removed)
        watch_free_bytes(data_dir)
        return cls(
            data_dir=data_dir,
            database=database,
            images=ImageRepository(database, blobs, faults),
            videos=VideoRepository(database, blobs),
            jobs=JobRepository(database),
            faces=FaceRepository(database),
            cohort=CohortRepository(database),
            embedding_model=EmbeddingModelRecord(database),
        )

    def free_bytes(self) -> int:
        """Bytes still free on the data directory's disk."""
        return free_bytes(self.data_dir)

    def reserve_held(self) -> int:
        """Bytes the disk reserve holds now (0 while released)."""
        return self.database.reserve.held()

    def close(self) -> None:
        self.database.close()
