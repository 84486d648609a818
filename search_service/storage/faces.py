"""Read models over stored faces: where a search hit comes from, a video person's vectors,
collection counts, and the feed an index is built from."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import numpy as np

from search_service.domain import CollectionStats, FaceBatch, HitSource, PersonVectors, StoredFace
from search_service.storage.database import IN_LIST, Database, as_list
from search_service.storage.media import box_of
from search_service.storage.videos import time_ranges


def stacked(blobs: Sequence[bytes]) -> np.ndarray:
    """Stored embeddings (little-endian float32 blobs) as the rows of one array; (0, 0) for none."""
    if not blobs:
        return np.zeros((0, 0), np.float32)
    return np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), -1)


class FaceRepository:
    """Also the index's ``FaceSource``: its ``store_id`` and ``face_batches``."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.store_id = database.meta("store_id") or ""

    def describe(self, face_ids: Sequence[int]) -> dict[int, HitSource]:
        """Source details of faces, by face id; faces deleted meanwhile are absent."""
        if not face_ids:
            return {}
        with self._database.reading() as db:
            rows = db.execute(
                "SELECT f.id, f.media_id, f.source, f.collection, f.x1, f.y1, f.x2, f.y2, f.time_s, "
                "f.track_id, m.external_id, m.filename, m.width, m.height, t.person "
                "FROM faces f JOIN media m ON m.id = f.media_id "
                f"LEFT JOIN tracks t ON t.id = f.track_id WHERE f.id {IN_LIST}",
                (as_list(sorted(set(face_ids))),),
            ).fetchall()
            videos = sorted({row["media_id"] for row in rows if row["person"] is not None})
            ranges = {
                (person["media_id"], person["person"]): time_ranges(person["time_ranges"])
                for person in db.execute(
                    f"SELECT media_id, person, time_ranges FROM people WHERE media_id {IN_LIST}",
                    (as_list(videos),),
                )
            }
        return {
            row["id"]: HitSource(
                face_id=row["id"],
                media_id=row["media_id"],
                source=row["source"],
                external_id=row["external_id"],
                collection=row["collection"],
                box=box_of(row),
                filename=row["filename"],
                width=row["width"],
                height=row["height"],
                time_ranges=None if row["person"] is None else ranges[(row["media_id"], row["person"])],
                person=row["person"],
                track_id=row["track_id"],
                time_s=row["time_s"],
            )
            for row in rows
        }

    def stored_face(self, face_id: int) -> StoredFace | None:
        """A stored face with its vector, as a search query; None when there is none."""
        # One hold of the (reentrant) lock around describe and the rest: no delete in between.
        with self._database.reading() as db:
            where = self.describe([face_id]).get(face_id)
            if where is None:
                return None
            row = db.execute("SELECT score, embedding FROM faces WHERE id = ?", (face_id,)).fetchone()
            own = (
                [face_id]
                if where.person is None
                else [
                    sibling[0]
                    for sibling in db.execute(
                        "SELECT f.id FROM faces f JOIN tracks t ON t.id = f.track_id "
                        "WHERE t.media_id = ? AND t.person = ?",
                        (where.media_id, where.person),
                    )
                ]
            )
        return StoredFace(where, row["score"], np.frombuffer(row["embedding"], "<f4"), frozenset(own))

    def vectors(self, face_ids: Collection[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of these faces: their ids (ascending) and the vectors as rows; faces deleted
        meanwhile are absent."""
        rows = self._database.read(
            f"SELECT id, embedding FROM faces WHERE id {IN_LIST} ORDER BY id", (as_list(sorted(face_ids)),)
        )
        return np.asarray([row["id"] for row in rows], np.int64), stacked([row["embedding"] for row in rows])

    def person_vectors(self, people: Collection[tuple[int, int]]) -> dict[tuple[int, int], PersonVectors]:
        """Every stored vector of these (video id, person) pairs, with the start of its track."""
        if not people:
            return {}
        wanted = set(people)
        starts: dict[tuple[int, int], list[float]] = {}
        vectors: dict[tuple[int, int], list[bytes]] = {}
        for row in self._database.read(
            "SELECT t.media_id, t.person, t.start_s, f.embedding "
            f"FROM faces f JOIN tracks t ON t.id = f.track_id WHERE t.media_id {IN_LIST}",
            (as_list(sorted({video for video, _ in wanted})),),
        ):
            key = (row["media_id"], row["person"])
            if key in wanted:
                starts.setdefault(key, []).append(row["start_s"])
                vectors.setdefault(key, []).append(row["embedding"])
        return {
            key: PersonVectors(
                np.asarray(starts[key]),
                stacked(blobs),
            )
            for key, blobs in vectors.items()
        }

    def collections(self) -> list[CollectionStats]:
        rows = self._database.read(
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
        db = self._database.separate_reader()
        try:
            cursor = db.execute("SELECT id, media_id, source, collection, embedding FROM faces ORDER BY id")
            while rows := cursor.fetchmany(batch_size):
                ids, media, sources, collections, blobs = zip(*rows, strict=True)
                yield FaceBatch(
                    face_ids=np.asarray(ids, np.int64),
                    media_ids=np.asarray(media, np.int64),
                    sources=sources,
                    collections=collections,
                    vectors=stacked(blobs),
                )
        finally:
            db.close()
