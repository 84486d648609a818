"""What photos and videos share in storage: the media table, lookup by filters, deletion.

A media row names its file by digest; thumbnails of video tracks are files too. A file is
removed only when no row names it any more (the same bytes may be stored in two collections).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from search_service.domain import Box, FaceBatch, MediaRecord, Source
from search_service.storage.blobs import BlobStore
from search_service.storage.database import IN_LIST, Database, as_list

MediaKind = Literal["image", "video"]

MEDIA_FIELDS = tuple(field.name for field in dataclasses.fields(MediaRecord))


def media_fields(row: sqlite3.Row) -> dict[str, Any]:
    """The columns every media row has, as MediaRecord's fields."""
    return {name: row[name] for name in MEDIA_FIELDS}


def box_of(row: sqlite3.Row) -> Box:
    return (row["x1"], row["y1"], row["x2"], row["y2"])


def face_batch(
    ids: list[int], media_ids: list[int], source: Source, collections: list[str], vectors: list[np.ndarray]
) -> FaceBatch:
    return FaceBatch(
        face_ids=np.asarray(ids, np.int64),
        media_ids=np.asarray(media_ids, np.int64),
        sources=[source] * len(ids),
        collections=collections,
        vectors=np.vstack(vectors).astype(np.float32) if vectors else np.empty((0, 0), np.float32),
    )


def find_media(
    db: sqlite3.Connection,
    kind: MediaKind,
    columns: str,
    *,
    sha256: Sequence[str] = (),
    collection: str | None = None,
    external_id: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[sqlite3.Row]:
    """Rows matching every given filter, by ascending id from ``after_id`` (keyset paging)."""
    clauses: list[str] = ["kind = ?", "id > ?"]
    parameters: list[object] = [kind, after_id]
    if sha256:
        clauses.append(f"sha256 {IN_LIST}")
        parameters.append(as_list(sha256))
    if collection is not None:
        clauses.append("collection = ?")
        parameters.append(collection)
    if external_id is not None:
        clauses.append("external_id = ?")
        parameters.append(external_id)
    return db.execute(
        f"SELECT {columns} FROM media WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
        [*parameters, limit],
    ).fetchall()


def unreferenced(db: sqlite3.Connection, digests: Collection[str]) -> list[str]:
    """Those of ``digests`` that no media row or thumbnail names (files shared by content stay)."""
    rows = db.execute(
        "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT sha256 FROM media) AND value NOT IN "
        "(SELECT thumbnail_sha256 FROM tracks WHERE thumbnail_sha256 IS NOT NULL)",
        (as_list(sorted(digests)),),
    ).fetchall()
    return [row[0] for row in rows]


def referenced_files(database: Database) -> set[str]:
    rows = database.read(
        "SELECT sha256 FROM media "
        "UNION SELECT thumbnail_sha256 FROM tracks WHERE thumbnail_sha256 IS NOT NULL"
    )
    return {row[0] for row in rows}


def delete_media(database: Database, blobs: BlobStore, media_id: int, kind: MediaKind) -> bool:
    """Delete a photo or video with its faces (and tracks, jobs, people); False when there is none."""
    with database.lock:
        with database.transaction() as db:
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
            unused = unreferenced(db, files)
        # After the commit: a crash in between leaves unreferenced files for the next sweep.
        for digest in unused:
            blobs.remove(digest)
        return True


Record = TypeVar("Record", bound=MediaRecord)


class MediaRepository(ABC, Generic[Record]):
    """Lookup, listing and deletion, shared by photos and videos; subclasses say how rows become
    records (``columns``, ``records``)."""

    kind: MediaKind
    columns: str

    def __init__(self, database: Database, blobs: BlobStore) -> None:
        self._database = database
        self._blobs = blobs

    @staticmethod
    @abstractmethod
    def records(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[Record]:
        """Rows of ``columns`` as records, with what other tables add to them."""

    def get(self, media_id: int) -> Record | None:
        with self._database.reading() as db:
            rows = db.execute(
                f"SELECT {self.columns} FROM media WHERE id = ? AND kind = ?", (media_id, self.kind)
            ).fetchall()
            return self.records(db, rows)[0] if rows else None

    def find(
        self,
        *,
        sha256: Sequence[str] = (),
        collection: str | None = None,
        external_id: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Record]:
        """Records matching every given filter, by ascending id from ``after_id`` (keyset paging)."""
        with self._database.reading() as db:
            rows = find_media(
                db,
                self.kind,
                self.columns,
                sha256=sha256,
                collection=collection,
                external_id=external_id,
                after_id=after_id,
                limit=limit,
            )
            return self.records(db, rows)

    def file(self, record: Record) -> Path:
        return self._blobs.path(record.sha256)

    def delete(self, media_id: int) -> bool:
        """Delete the record with everything hanging off it, and its files (unless other rows name
        them); False when there is none. Deleting is how space is freed: on a full disk it may spend
        the disk reserve (space.py)."""
        return self._database.reserve.freeing(
            partial(delete_media, self._database, self._blobs, media_id, self.kind)
        )
