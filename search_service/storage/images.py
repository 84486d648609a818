"""Photos and their faces: stored together, deduplicated by content within a collection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import numpy as np

from search_service.domain import DetectedFace, FaceBatch, FaceRecord, ImageRecord, NewImage, StoredImage
from search_service.storage.blobs import BlobStore
from search_service.storage.database import IN_LIST, Database, as_list, now
from search_service.storage.faults import FaultHook
from search_service.storage.media import (
    MEDIA_FIELDS,
    MediaRepository,
    box_of,
    face_batch,
    find_media,
    media_fields,
)

_COLUMNS = ", ".join((*MEDIA_FIELDS, "metadata"))


def _records(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[ImageRecord]:
    ids = [row["id"] for row in rows]
    faces: dict[int, list[FaceRecord]] = {media_id: [] for media_id in ids}
    for face in db.execute(
        "SELECT id, media_id, x1, y1, x2, y2, score, landmarks FROM faces "
        f"WHERE media_id {IN_LIST} ORDER BY id",
        (as_list(ids),),
    ):
        landmarks = None if face["landmarks"] is None else json.loads(face["landmarks"])
        faces[face["media_id"]].append(FaceRecord(face["id"], box_of(face), face["score"], landmarks))
    return [
        ImageRecord(**media_fields(row), metadata=json.loads(row["metadata"]), faces=faces[row["id"]])
        for row in rows
    ]


class ImageRepository(MediaRepository[ImageRecord]):
    kind = "image"
    columns = _COLUMNS
    records = staticmethod(_records)

    def __init__(self, database: Database, blobs: BlobStore, faults: FaultHook) -> None:
        super().__init__(database, blobs)
        self._faults = faults

    def add(self, images: Sequence[NewImage]) -> tuple[list[StoredImage], FaceBatch]:
        """Store photos and their faces in one transaction; photos already in their collection
        (same content) are returned as duplicates instead. Returns the new faces for the index."""
        results: list[StoredImage] = []
        new_ids: list[int] = []
        new_media: list[int] = []
        new_collections: list[str] = []
        new_vectors: list[np.ndarray] = []
        with self._database.lock:
            with self._blobs.writing(image.upload.sha256 for image in images):
                # Files first, durable before the rows naming them, and under the lock (see Database).
                for image in images:
                    self._blobs.put(image.upload.sha256, image.upload.data)
                with self._database.transaction() as db:
                    for image in images:
                        existing = find_media(
                            db, "image", _COLUMNS, sha256=[image.upload.sha256], collection=image.collection
                        )
                        if existing:
                            [record] = _records(db, existing)
                            results.append(StoredImage(record, duplicate=True))
                            continue
                        media_id = self._insert(db, image)
                        for face in image.detected.faces:
                            new_ids.append(self._insert_face(db, media_id, image.collection, face))
                            new_media.append(media_id)
                            new_collections.append(image.collection)
                            new_vectors.append(face.embedding)
                        [record] = _records(db, self._rows(db, media_id))
                        results.append(StoredImage(record, duplicate=False))
                    self._faults("rows_written")
            self._faults("committed")
        return results, face_batch(new_ids, new_media, "image", new_collections, new_vectors)

    @staticmethod
    def _rows(db: sqlite3.Connection, media_id: int) -> list[sqlite3.Row]:
        return db.execute(f"SELECT {_COLUMNS} FROM media WHERE id = ?", (media_id,)).fetchall()

    @staticmethod
    def _insert(db: sqlite3.Connection, image: NewImage) -> int:
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
                now(),
            ),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _insert_face(db: sqlite3.Connection, media_id: int, collection: str, face: DetectedFace) -> int:
        row = db.execute(
            "INSERT INTO faces (media_id, source, collection, x1, y1, x2, y2, score, landmarks, embedding) "
            "VALUES (?, 'image', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                media_id,
                collection,
                *face.box,
                face.score,
                None if face.landmarks is None else json.dumps(face.landmarks),
                np.asarray(face.embedding, "<f4").tobytes(),
            ),
        ).fetchone()
        return int(row[0])
