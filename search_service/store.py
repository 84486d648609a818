"""The durable store and source of truth: one SQLite file (WAL) plus content-addressed files.

Media rows cover photos now and videos next (with their tracks and ingest jobs); every face row
carries its embedding as a float32 BLOB, so any vector index can be rebuilt from here alone.
Writes are serialised by one lock and follow one order: file durable, then row committed, then
the caller acknowledges. Hence a crash loses nothing acknowledged and leaves no half-ingested
photo; the only debris, an unreferenced file, is swept at the next start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from search_service.blobs import BlobStore
from search_service.domain import (
    Box,
    CollectionStats,
    EmbeddingModel,
    FaceRecord,
    HitSource,
    ImageRecord,
    JobRecord,
    JobState,
    MediaRecord,
    NewImage,
    PersonRecord,
    StagedFile,
    SubmittedVideo,
    TimeRange,
    TrackRecord,
    VideoRecord,
)
from search_service.errors import ModelMismatchError
from search_service.index.base import FaceBatch, Source
from search_service.video import VideoAnalysis

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 2
DATABASE_FILE = "facesearch.sqlite3"

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE media (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids of deleted media are never reused
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    collection TEXT NOT NULL,
    external_id TEXT,
    sha256 TEXT NOT NULL,
    filename TEXT,
    content_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    duration_s REAL,  -- videos
    fps REAL,  -- videos
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (kind, collection, sha256)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_external_id ON media (external_id);

-- Background ingest of a video; kept here so that a restart resumes or re-queues it.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    frames_processed INTEGER NOT NULL DEFAULT 0,
    faces_found INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_media ON jobs (media_id);

-- One person's continuous appearance in a video; tracks of one person share `person`.
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    person INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL CHECK (end_s >= start_s),
    best_time_s REAL NOT NULL,  -- the frame of the thumbnail face
    thumbnail_sha256 TEXT,  -- a file in the blob store
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL  -- face box at best_time_s
);
CREATE INDEX tracks_media ON tracks (media_id, person);

CREATE TABLE faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    track_id INTEGER REFERENCES tracks (id) ON DELETE CASCADE,  -- videos: a representative vector
    -- Copies of media.kind and media.collection: loading an index then needs no join.
    source TEXT NOT NULL CHECK (source IN ('image', 'video')),
    collection TEXT NOT NULL,
    time_s REAL,  -- videos: the frame the vector comes from
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    landmarks TEXT,  -- JSON [[x, y] x 5]
    embedding BLOB NOT NULL  -- float32, L2-normalised
);
CREATE INDEX faces_media ON faces (media_id);
CREATE INDEX faces_track ON faces (track_id);
"""

# Video ingest: job bookkeeping, and people (tracks grouped) with their merged time ranges.
_SCHEMA_V2 = """
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- runs started (a restart adds one)
ALTER TABLE jobs ADD COLUMN started_at TEXT;
ALTER TABLE jobs ADD COLUMN finished_at TEXT;
ALTER TABLE jobs ADD COLUMN timings TEXT;  -- JSON: wall seconds per stage of the finished run
ALTER TABLE tracks ADD COLUMN faces INTEGER NOT NULL DEFAULT 0;  -- observations linked into the track

CREATE TABLE people (
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    person INTEGER NOT NULL,
    time_ranges TEXT NOT NULL,  -- JSON [[start_s, end_s], ...]: its tracks' ranges, merged
    thumbnail_track INTEGER REFERENCES tracks (id) ON DELETE SET NULL,  -- its best face
    PRIMARY KEY (media_id, person)
);
"""

# Entry i brings a store from schema version i to i + 1; a new store runs them all.
_MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2)

_MEDIA_FIELDS = tuple(field.name for field in dataclasses.fields(MediaRecord))
_IMAGE_COLUMNS = ", ".join((*_MEDIA_FIELDS, "metadata"))
_VIDEO_COLUMNS = ", ".join((*_MEDIA_FIELDS, "duration_s", "fps"))
_JOB_COLUMNS = (
    "id, media_id, state, progress, frames_processed, faces_found, error, attempts, timings, "
    "created_at, updated_at, started_at, finished_at"
)
_INSERT_VIDEO_FACE = (
    "INSERT INTO faces (media_id, track_id, source, collection, time_s, x1, y1, x2, y2, score, embedding) "
    "VALUES (?, ?, 'video', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
# Uploading a video again whose last job ended like this queues a new job: how a client retries.
_RETRYABLE_STATES: tuple[JobState, ...] = ("failed", "cancelled")


@dataclass(frozen=True)
class StoredImage:
    image: ImageRecord
    duplicate: bool


@dataclass(frozen=True)
class PersonVectors:
    """The stored vectors of one person in a video (rows), and the start second of each one's track."""

    track_starts: np.ndarray
    vectors: np.ndarray


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Lists are passed as one JSON parameter and expanded by SQLite (json_each): no limit on their
# length from the number of bound variables, and no SQL built from data.
_IN_LIST = "IN (SELECT value FROM json_each(?))"


def _box(row: sqlite3.Row) -> Box:
    return (row["x1"], row["y1"], row["x2"], row["y2"])


def _media_fields(row: sqlite3.Row) -> dict[str, Any]:
    """The columns every media row has, as MediaRecord's fields."""
    return {name: row[name] for name in _MEDIA_FIELDS}


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        video_id=row["media_id"],
        state=row["state"],
        progress=row["progress"],
        frames_processed=row["frames_processed"],
        faces_found=row["faces_found"],
        error=row["error"],
        attempts=row["attempts"],
        timings=None if row["timings"] is None else json.loads(row["timings"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _ms(seconds: float) -> float:
    """Times are stored to the millisecond: finer is noise at a few samples per second."""
    return round(seconds, 3)


def _ranges(text: str) -> list[TimeRange]:
    return [(float(start), float(end)) for start, end in json.loads(text)]


def _face_batch(
    ids: list[int], media_ids: list[int], source: Source, collections: list[str], vectors: list[np.ndarray]
) -> FaceBatch:
    return FaceBatch(
        face_ids=np.asarray(ids, np.int64),
        media_ids=np.asarray(media_ids, np.int64),
        sources=[source] * len(ids),
        collections=collections,
        vectors=np.vstack(vectors).astype(np.float32) if vectors else np.empty((0, 0), np.float32),
    )


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.database_path = data_dir / DATABASE_FILE
        self.blobs = BlobStore(data_dir / "media")
        # Reentrant: add_images and delete_media hold it across file operations and the transaction,
        # so that a delete can never unlink a file that a concurrent ingest is about to reference.
        self._lock = threading.RLock()
        self._db = self._connect()
        self._migrate()
        self.store_id = self._meta("store_id") or ""

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        """Open (creating if needed) the store in ``data_dir`` and sweep crash debris."""
        data_dir.mkdir(parents=True, exist_ok=True)
        store = cls(data_dir)
        removed = store.blobs.sweep(store._referenced_files())
        if removed:
            log.info("removed unreferenced files left by an interrupted write", files=removed)
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) by _transaction.
        db = sqlite3.connect(self.database_path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit survives power loss too, not only a process crash.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the store lock; commits on success, rolls back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.database_path} has schema version {version}; this build reads {SCHEMA_VERSION}"
            )
        with self._lock:
            for step in range(version, SCHEMA_VERSION):
                extra = (
                    f"INSERT INTO meta (key, value) VALUES ('store_id', '{uuid.uuid4().hex}');"
                    if step == 0
                    else ""
                )
                self._db.executescript(
                    f"BEGIN IMMEDIATE; {_MIGRATIONS[step]}; {extra} PRAGMA user_version = {step + 1}; COMMIT;"
                )

    def _meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def _referenced_files(self) -> set[str]:
        rows = self._read(
            "SELECT sha256 FROM media "
            "UNION SELECT thumbnail_sha256 FROM tracks WHERE thumbnail_sha256 IS NOT NULL"
        )
        return {row[0] for row in rows}

    # -- embedding model ---------------------------------------------------------------------

    def embedding_model(self) -> EmbeddingModel | None:
        name, dimension = self._meta("embedding_model"), self._meta("embedding_dimension")
        if name is None or dimension is None:
            return None
        return EmbeddingModel(name, int(dimension))

    def ensure_embedding_model(self, model: EmbeddingModel) -> None:
        """Record the model on first use; refuse vectors from any other afterwards."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dimension')"
            ).fetchall()
            stored = {row["key"]: row["value"] for row in rows}
            if not stored:
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("embedding_model", model.name), ("embedding_dimension", str(model.dimension))],
                )
            elif stored != {"embedding_model": model.name, "embedding_dimension": str(model.dimension)}:
                raise ModelMismatchError(
                    f"this index holds {stored['embedding_model']} vectors "
                    f"({stored['embedding_dimension']}-d) but the embedder runs {model.name} "
                    f"({model.dimension}-d); use another DATA_DIR or the same model"
                )

    # -- images ------------------------------------------------------------------------------

    def add_images(self, images: Sequence[NewImage]) -> tuple[list[StoredImage], FaceBatch]:
        """Store photos and their faces in one transaction; photos already in their collection
        (same content) are returned as duplicates instead. Returns the new faces for the index."""
        results: list[StoredImage] = []
        new_ids: list[int] = []
        new_media: list[int] = []
        new_collections: list[str] = []
        new_vectors: list[np.ndarray] = []
        with self._lock, self._transaction() as db:
            # Files first (durable before the rows naming them), and under the lock: see __init__.
            for image in images:
                self.blobs.put(image.upload.sha256, image.upload.data)
            for image in images:
                existing = db.execute(
                    "SELECT id FROM media WHERE kind = 'image' AND collection = ? AND sha256 = ?",
                    (image.collection, image.upload.sha256),
                ).fetchone()
                if existing is not None:
                    results.append(StoredImage(self._image(db, existing["id"]), duplicate=True))
                    continue
                media_id = self._insert_image(db, image)
                for face in image.detected.faces:
                    new_ids.append(
                        db.execute(
                            "INSERT INTO faces (media_id, source, collection, x1, y1, x2, y2, score, "
                            "landmarks, embedding) VALUES (?, 'image', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            (
                                media_id,
                                image.collection,
                                *face.box,
                                face.score,
                                None if face.landmarks is None else json.dumps(face.landmarks),
                                np.asarray(face.embedding, "<f4").tobytes(),
                            ),
                        ).fetchone()[0]
                    )
                    new_media.append(media_id)
                    new_collections.append(image.collection)
                    new_vectors.append(face.embedding)
                results.append(StoredImage(self._image(db, media_id), duplicate=False))
        return results, _face_batch(new_ids, new_media, "image", new_collections, new_vectors)

    @staticmethod
    def _insert_image(db: sqlite3.Connection, image: NewImage) -> int:
        upload = image.upload
        row = db.execute(
            "INSERT INTO media (kind, collection, external_id, sha256, filename, content_type, "
            "size_bytes, width, height, metadata, created_at) "
            "VALUES ('image', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                image.collection,
                image.external_id,
                upload.sha256,
                upload.filename,
                upload.content_type,
                len(upload.data),
                image.detected.width,
                image.detected.height,
                json.dumps(image.metadata),
                _now(),
            ),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _image_records(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[ImageRecord]:
        ids = [row["id"] for row in rows]
        faces: dict[int, list[FaceRecord]] = {media_id: [] for media_id in ids}
        for face in db.execute(
            f"SELECT id, media_id, x1, y1, x2, y2, score, landmarks FROM faces WHERE media_id {_IN_LIST} "
            "ORDER BY id",
            (json.dumps(ids),),
        ):
            landmarks = None if face["landmarks"] is None else json.loads(face["landmarks"])
            faces[face["media_id"]].append(FaceRecord(face["id"], _box(face), face["score"], landmarks))
        return [
            ImageRecord(**_media_fields(row), metadata=json.loads(row["metadata"]), faces=faces[row["id"]])
            for row in rows
        ]

    def _image(self, db: sqlite3.Connection, media_id: int) -> ImageRecord:
        rows = db.execute(f"SELECT {_IMAGE_COLUMNS} FROM media WHERE id = ?", (media_id,)).fetchall()
        return self._image_records(db, rows)[0]

    def get_image(self, media_id: int) -> ImageRecord | None:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM media WHERE id = ? AND kind = 'image'", (media_id,)
            ).fetchall()
            return self._image_records(self._db, rows)[0] if rows else None

    def list_images(
        self,
        *,
        sha256: Sequence[str] = (),
        collection: str | None = None,
        external_id: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[ImageRecord]:
        """Photos matching every given filter, by ascending id from ``after_id`` (keyset paging)."""
        with self._lock:
            rows = self._find_media("image", _IMAGE_COLUMNS, sha256, collection, external_id, after_id, limit)
            return self._image_records(self._db, rows)

    def _find_media(
        self,
        kind: str,
        columns: str,
        sha256: Sequence[str],
        collection: str | None,
        external_id: str | None,
        after_id: int,
        limit: int,
    ) -> list[sqlite3.Row]:
        clauses: list[str] = ["kind = ?", "id > ?"]
        parameters: list[object] = [kind, after_id]
        if sha256:
            clauses.append(f"sha256 {_IN_LIST}")
            parameters.append(json.dumps(list(sha256)))
        if collection is not None:
            clauses.append("collection = ?")
            parameters.append(collection)
        if external_id is not None:
            clauses.append("external_id = ?")
            parameters.append(external_id)
        return self._db.execute(
            f"SELECT {columns} FROM media WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*parameters, limit],
        ).fetchall()

    def delete_media(self, media_id: int, kind: str) -> bool:
        """Delete a photo or video with its faces (and tracks, jobs); False when there is none."""
        with self._lock:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT sha256 FROM media WHERE id = ? AND kind = ?", (media_id, kind)
                ).fetchone()
                if row is None:
                    return False
                thumbnails = db.execute(
                    "SELECT thumbnail_sha256 FROM tracks WHERE media_id = ? AND thumbnail_sha256 IS NOT NULL",
                    (media_id,),
                ).fetchall()
                files = {row["sha256"], *(thumbnail[0] for thumbnail in thumbnails)}
                db.execute("DELETE FROM media WHERE id = ?", (media_id,))
                unused = self._unreferenced(db, files)
            # After the commit: a crash in between leaves unreferenced files for the next sweep.
            for digest in unused:
                self.blobs.remove(digest)
            return True

    @staticmethod
    def _unreferenced(db: sqlite3.Connection, digests: Collection[str]) -> list[str]:
        """Those of ``digests`` that no media row or thumbnail names (files shared by content stay)."""
        rows = db.execute(
            "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT sha256 FROM media) AND value NOT IN "
            "(SELECT thumbnail_sha256 FROM tracks WHERE thumbnail_sha256 IS NOT NULL)",
            (json.dumps(sorted(digests)),),
        ).fetchall()
        return [row[0] for row in rows]

    # -- videos ------------------------------------------------------------------------------

    def add_video(self, staged: StagedFile, collection: str, external_id: str | None) -> SubmittedVideo:
        """Store an uploaded video and queue its ingest job, in one transaction.

        The same bytes already in the collection are not stored twice: that video comes back, with
        a new job when its last one failed or was cancelled (uploading again is how to retry).
        """
        with self._lock:
            # The file is durable before the row naming it, as for photos (see __init__).
            self.blobs.put_file(staged.sha256, staged.path)
            with self._transaction() as db:
                existing = db.execute(
                    "SELECT id FROM media WHERE kind = 'video' AND collection = ? AND sha256 = ?",
                    (collection, staged.sha256),
                ).fetchone()
                if existing is None:
                    video_id = db.execute(
                        "INSERT INTO media (kind, collection, external_id, sha256, filename, content_type, "
                        "size_bytes, created_at) VALUES ('video', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (
                            collection,
                            external_id,
                            staged.sha256,
                            staged.filename,
                            staged.content_type,
                            staged.size_bytes,
                            _now(),
                        ),
                    ).fetchone()[0]
                    return SubmittedVideo(video_id, self._insert_job(db, video_id), duplicate=False)
                video_id = existing["id"]
                last = db.execute(
                    "SELECT id, state FROM jobs WHERE media_id = ? ORDER BY id DESC LIMIT 1", (video_id,)
                ).fetchone()
                if last is not None and last["state"] not in _RETRYABLE_STATES:
                    return SubmittedVideo(video_id, last["id"], duplicate=True)
                return SubmittedVideo(video_id, self._insert_job(db, video_id), duplicate=True)

    @staticmethod
    def _insert_job(db: sqlite3.Connection, video_id: int) -> int:
        now = _now()
        row = db.execute(
            "INSERT INTO jobs (media_id, state, created_at, updated_at) "
            "VALUES (?, 'queued', ?, ?) RETURNING id",
            (video_id, now, now),
        ).fetchone()
        return int(row[0])

    def get_video(self, video_id: int) -> VideoRecord | None:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_VIDEO_COLUMNS} FROM media WHERE id = ? AND kind = 'video'", (video_id,)
            ).fetchall()
            return self._video_records(self._db, rows)[0] if rows else None

    def list_videos(
        self,
        *,
        collection: str | None = None,
        external_id: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[VideoRecord]:
        """Videos matching every given filter, by ascending id from ``after_id`` (keyset paging)."""
        with self._lock:
            rows = self._find_media("video", _VIDEO_COLUMNS, (), collection, external_id, after_id, limit)
            return self._video_records(self._db, rows)

    @staticmethod
    def _video_records(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[VideoRecord]:
        ids = json.dumps([row["id"] for row in rows])
        jobs = {
            job["media_id"]: _job(job)
            for job in db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN "
                f"(SELECT MAX(id) FROM jobs WHERE media_id {_IN_LIST} GROUP BY media_id)",
                (ids,),
            )
        }
        tracks: dict[tuple[int, int], list[TrackRecord]] = {}
        for track in db.execute(
            "SELECT id, media_id, person, start_s, end_s, faces, best_time_s, x1, y1, x2, y2, "
            f"thumbnail_sha256 FROM tracks WHERE media_id {_IN_LIST} ORDER BY start_s, id",
            (ids,),
        ):
            tracks.setdefault((track["media_id"], track["person"]), []).append(
                TrackRecord(
                    id=track["id"],
                    start=track["start_s"],
                    end=track["end_s"],
                    faces=track["faces"],
                    best_time=track["best_time_s"],
                    box=_box(track),
                    has_thumbnail=track["thumbnail_sha256"] is not None,
                )
            )
        people: dict[int, list[PersonRecord]] = {}
        for person in db.execute(
            f"SELECT media_id, person, time_ranges, thumbnail_track FROM people WHERE media_id {_IN_LIST} "
            "ORDER BY media_id, person",
            (ids,),
        ):
            key = (person["media_id"], person["person"])
            people.setdefault(key[0], []).append(
                PersonRecord(
                    key[1], _ranges(person["time_ranges"]), tracks.get(key, []), person["thumbnail_track"]
                )
            )
        return [
            VideoRecord(
                **_media_fields(row),
                duration=row["duration_s"],
                fps=row["fps"],
                job=jobs.get(row["id"]),
                people=people.get(row["id"], []),
            )
            for row in rows
        ]

    def thumbnail(self, video_id: int, track_id: int) -> str | None:
        """The digest of a track's thumbnail file; None when the video has no such track or thumbnail."""
        rows = self._read(
            "SELECT thumbnail_sha256 FROM tracks WHERE id = ? AND media_id = ?", (track_id, video_id)
        )
        return rows[0][0] if rows else None

    def finish_video_job(
        self, job: JobRecord, analysis: VideoAnalysis, timings: dict[str, float]
    ) -> FaceBatch | None:
        """Store a job's result (people, tracks, thumbnails, vectors) and mark it done, atomically.

        Returns the new faces for the index, or None when the job stopped running meanwhile
        (cancelled, or its video deleted): then nothing of it is stored.
        """
        thumbnails = {
            hashlib.sha256(track.thumbnail_jpeg).hexdigest(): track.thumbnail_jpeg
            for track in analysis.tracks
            if track.thumbnail_jpeg
        }
        with self._lock:
            for digest, data in thumbnails.items():
                self.blobs.put(digest, data)
            with self._transaction() as db:
                media = db.execute(
                    "SELECT m.collection FROM jobs j JOIN media m ON m.id = j.media_id "
                    "WHERE j.id = ? AND j.state = 'running'",
                    (job.id,),
                ).fetchone()
                if media is not None:
                    batch = self._insert_analysis(db, job.video_id, media["collection"], analysis)
                    now = _now()
                    db.execute(
                        "UPDATE media SET width = ?, height = ?, duration_s = ?, fps = ? WHERE id = ?",
                        (analysis.width, analysis.height, _ms(analysis.duration), analysis.fps, job.video_id),
                    )
                    db.execute(
                        "UPDATE jobs SET state = 'done', progress = 1, frames_processed = ?, "
                        "faces_found = ?, timings = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                        (analysis.frames_sampled, analysis.faces_seen, json.dumps(timings), now, now, job.id),
                    )
                    return batch
                unused = self._unreferenced(db, thumbnails)
            for digest in unused:
                self.blobs.remove(digest)
            return None

    @staticmethod
    def _insert_analysis(
        db: sqlite3.Connection, video_id: int, collection: str, analysis: VideoAnalysis
    ) -> FaceBatch:
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for person in analysis.people:
            track_ids: dict[int, int] = {}
            for track in person.tracks:
                thumbnail = hashlib.sha256(track.thumbnail_jpeg).hexdigest() if track.thumbnail_jpeg else None
                start, end, best_time = _ms(track.start), _ms(track.end), _ms(track.best_time)
                track_ids[track.index] = track_id = db.execute(
                    "INSERT INTO tracks (media_id, person, start_s, end_s, best_time_s, thumbnail_sha256, "
                    "x1, y1, x2, y2, faces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (video_id, person.index, start, end, best_time, thumbnail, *track.best_box, track.faces),
                ).fetchone()[0]
                # The tracker keeps no frame per representative: each points at its track's best
                # face, which is the moment a client should jump to anyway.
                rows = [
                    (video_id, track_id, collection, best_time, *track.best_box, track.best_score,
                     np.asarray(vector, "<f4").tobytes())
                    for vector in track.representatives
                ]  # fmt: skip
                for row in rows:
                    ids.append(db.execute(_INSERT_VIDEO_FACE, row).fetchone()[0])
                vectors.extend(track.representatives)
            db.execute(
                "INSERT INTO people (media_id, person, time_ranges, thumbnail_track) VALUES (?, ?, ?, ?)",
                (
                    video_id,
                    person.index,
                    json.dumps([(_ms(start), _ms(end)) for start, end in person.time_ranges]),
                    track_ids[person.best_track.index],
                ),
            )
        return _face_batch(ids, [video_id] * len(ids), "video", [collection] * len(ids), vectors)

    # -- jobs --------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def claim_job(self) -> JobRecord | None:
        """Start the oldest queued job (state running, one more attempt); None when none waits."""
        if not self._read("SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1"):
            return None  # idle workers poll: a read needs no write lock
        now = _now()
        with self._transaction() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, progress = 0, "
                "frames_processed = 0, faces_found = 0, error = NULL, timings = NULL, started_at = ?, "
                "updated_at = ? "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) "
                f"RETURNING {_JOB_COLUMNS}",
                (now, now),
            ).fetchone()
        return None if row is None else _job(row)

    def update_job_progress(self, job_id: int, progress: float, frames: int, faces: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, frames_processed = ?, faces_found = ?, updated_at = ? "
                "WHERE id = ? AND state = 'running'",
                (min(max(progress, 0.0), 1.0), frames, faces, _now(), job_id),
            )

    def set_job_state(
        self, job_id: int, state: JobState, *, only_from: Sequence[JobState], error: str | None = None
    ) -> JobRecord | None:
        """Move a job to ``state`` if it is in one of ``only_from``; returns it then, else None."""
        now = _now()
        finished = now if state in ("done", "failed", "cancelled") else None
        with self._transaction() as db:
            row = db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ? "
                f"WHERE id = ? AND state {_IN_LIST} RETURNING {_JOB_COLUMNS}",
                (state, error, now, finished, job_id, json.dumps(list(only_from))),
            ).fetchone()
        return None if row is None else _job(row)

    def requeue_interrupted(self) -> int:
        """Queue again every job left running by a stopped or crashed process; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'running'", (_now(),)
            ).rowcount

    def job_counts(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    # -- search support ----------------------------------------------------------------------

    def describe_faces(self, face_ids: Sequence[int]) -> dict[int, HitSource]:
        """Source details of faces, by face id; faces deleted meanwhile are absent."""
        if not face_ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT f.id, f.media_id, f.source, f.collection, f.x1, f.y1, f.x2, f.y2, f.time_s, "
                "f.track_id, m.external_id, t.person FROM faces f JOIN media m ON m.id = f.media_id "
                f"LEFT JOIN tracks t ON t.id = f.track_id WHERE f.id {_IN_LIST}",
                (json.dumps(sorted(set(face_ids))),),
            ).fetchall()
            videos = sorted({row["media_id"] for row in rows if row["person"] is not None})
            ranges = {
                (person["media_id"], person["person"]): _ranges(person["time_ranges"])
                for person in self._db.execute(
                    f"SELECT media_id, person, time_ranges FROM people WHERE media_id {_IN_LIST}",
                    (json.dumps(videos),),
                )
            }
        return {
            row["id"]: HitSource(
                face_id=row["id"],
                media_id=row["media_id"],
                source=row["source"],
                external_id=row["external_id"],
                collection=row["collection"],
                box=_box(row),
                time_ranges=None if row["person"] is None else ranges[(row["media_id"], row["person"])],
                person=row["person"],
                track_id=row["track_id"],
                time_s=row["time_s"],
            )
            for row in rows
        }

    def person_vectors(self, people: Collection[tuple[int, int]]) -> dict[tuple[int, int], PersonVectors]:
        """Every stored vector of these (video id, person) pairs, with the start of its track."""
        if not people:
            return {}
        wanted = set(people)
        starts: dict[tuple[int, int], list[float]] = {}
        vectors: dict[tuple[int, int], list[bytes]] = {}
        for row in self._read(
            "SELECT t.media_id, t.person, t.start_s, f.embedding "
            f"FROM faces f JOIN tracks t ON t.id = f.track_id WHERE t.media_id {_IN_LIST}",
            (json.dumps(sorted({video for video, _ in wanted})),),
        ):
            key = (row["media_id"], row["person"])
            if key in wanted:
                starts.setdefault(key, []).append(row["start_s"])
                vectors.setdefault(key, []).append(row["embedding"])
        return {
            key: PersonVectors(
                np.asarray(starts[key]),
                np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), -1),
            )
            for key, blobs in vectors.items()
        }

    def collections(self) -> list[CollectionStats]:
        rows = self._read(
            "SELECT collection, SUM(kind = 'image') AS images, SUM(kind = 'video') AS videos, "
            "(SELECT COUNT(*) FROM faces f WHERE f.collection = m.collection) AS faces "
            "FROM media m GROUP BY collection ORDER BY collection"
        )
        return [
            CollectionStats(row["collection"], row["images"], row["videos"], row["faces"]) for row in rows
        ]

    def face_batches(self, batch_size: int = 10_000) -> Iterator[FaceBatch]:
        """Every face with its vector, by ascending id, for building an index.

        Reads through its own connection: WAL lets it run beside writers without holding the lock.
        """
        db = sqlite3.connect(self.database_path)
        try:
            cursor = db.execute("SELECT id, media_id, source, collection, embedding FROM faces ORDER BY id")
            while rows := cursor.fetchmany(batch_size):
                ids, media, sources, collections, blobs = zip(*rows, strict=True)
                dimension = len(blobs[0]) // 4
                yield FaceBatch(
                    face_ids=np.asarray(ids, np.int64),
                    media_ids=np.asarray(media, np.int64),
                    sources=sources,
                    collections=collections,
                    vectors=np.frombuffer(b"".join(blobs), "<f4").reshape(len(rows), dimension),
                )
        finally:
            db.close()
