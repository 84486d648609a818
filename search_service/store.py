"""The durable store and source of truth: one SQLite file (WAL) plus content-addressed files.

Media rows cover photos now and videos next (with their tracks and ingest jobs); every face row
carries its embedding as a float32 BLOB, so any vector index can be rebuilt from here alone.
Writes are serialised by one lock and follow one order: file durable, then row committed, then
the caller acknowledges. Hence a crash loses nothing acknowledged and leaves no half-ingested
photo; the only debris, an unreferenced file, is swept at the next start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
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
    NewImage,
)
from search_service.errors import ModelMismatchError
from search_service.index.base import FaceBatch

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
DATABASE_FILE = "facesearch.sqlite3"

_SCHEMA = """
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

_IMAGE_COLUMNS = (
    "id, collection, external_id, sha256, filename, content_type, size_bytes, width, height, "
    "metadata, created_at"
)


@dataclass(frozen=True)
class StoredImage:
    image: ImageRecord
    duplicate: bool


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Lists are passed as one JSON parameter and expanded by SQLite (json_each): no limit on their
# length from the number of bound variables, and no SQL built from data.
_IN_LIST = "IN (SELECT value FROM json_each(?))"


def _box(row: sqlite3.Row) -> Box:
    return (row["x1"], row["y1"], row["x2"], row["y2"])


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
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise RuntimeError(
                f"{self.database_path} has schema version {version}; this build reads {SCHEMA_VERSION}"
            )
        with self._lock:
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}; INSERT INTO meta (key, value) VALUES ('store_id', "
                f"'{uuid.uuid4().hex}'); PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
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
        batch = FaceBatch(
            face_ids=np.asarray(new_ids, np.int64),
            media_ids=np.asarray(new_media, np.int64),
            sources=["image"] * len(new_ids),
            collections=new_collections,
            vectors=np.vstack(new_vectors).astype(np.float32)
            if new_vectors
            else np.empty((0, 0), np.float32),
        )
        return results, batch

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
            ImageRecord(
                id=row["id"],
                collection=row["collection"],
                external_id=row["external_id"],
                sha256=row["sha256"],
                filename=row["filename"],
                content_type=row["content_type"],
                size_bytes=row["size_bytes"],
                width=row["width"],
                height=row["height"],
                metadata=json.loads(row["metadata"]),
                created_at=row["created_at"],
                faces=faces[row["id"]],
            )
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
        clauses: list[str] = ["kind = 'image'", "id > ?"]
        parameters: list[object] = [after_id]
        if sha256:
            clauses.append(f"sha256 {_IN_LIST}")
            parameters.append(json.dumps(list(sha256)))
        if collection is not None:
            clauses.append("collection = ?")
            parameters.append(collection)
        if external_id is not None:
            clauses.append("external_id = ?")
            parameters.append(external_id)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM media WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                [*parameters, limit],
            ).fetchall()
            return self._image_records(self._db, rows)

    def delete_media(self, media_id: int, kind: str) -> bool:
        """Delete a photo or video with its faces (and tracks, jobs); False when there is none."""
        with self._lock:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT sha256 FROM media WHERE id = ? AND kind = ?", (media_id, kind)
                ).fetchone()
                if row is None:
                    return False
                db.execute("DELETE FROM media WHERE id = ?", (media_id,))
                still_used = db.execute("SELECT 1 FROM media WHERE sha256 = ?", (row["sha256"],)).fetchone()
            # After the commit: a crash in between leaves an unreferenced file for the next sweep.
            if still_used is None:
                self.blobs.remove(row["sha256"])
            return True

    # -- search support ----------------------------------------------------------------------

    def describe_faces(self, face_ids: Sequence[int]) -> dict[int, HitSource]:
        """Source details of faces, by face id; faces deleted meanwhile are absent."""
        if not face_ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT f.id, f.media_id, f.source, f.collection, f.x1, f.y1, f.x2, f.y2, m.external_id, "
                "t.person FROM faces f JOIN media m ON m.id = f.media_id "
                f"LEFT JOIN tracks t ON t.id = f.track_id WHERE f.id {_IN_LIST}",
                (json.dumps(sorted(set(face_ids))),),
            ).fetchall()
            videos = sorted({row["media_id"] for row in rows if row["person"] is not None})
            ranges: dict[tuple[int, int], list[tuple[float, float]]] = {}
            for track in self._db.execute(
                f"SELECT media_id, person, start_s, end_s FROM tracks WHERE media_id {_IN_LIST} "
                "ORDER BY start_s",
                (json.dumps(videos),),
            ):
                ranges.setdefault((track["media_id"], track["person"]), []).append(
                    (track["start_s"], track["end_s"])
                )
        return {
            row["id"]: HitSource(
                face_id=row["id"],
                media_id=row["media_id"],
                source=row["source"],
                external_id=row["external_id"],
                collection=row["collection"],
                box=_box(row),
                time_ranges=None if row["person"] is None else ranges[(row["media_id"], row["person"])],
            )
            for row in rows
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
