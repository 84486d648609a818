"""The score cohort: which stored faces search scores are normalised against (ids only; their
vectors stay in ``faces``, and a deleted face leaves the cohort by cascade)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np

from search_service.domain import CohortMembers
from search_service.storage.database import IN_LIST, Database, as_list
from search_service.storage.faces import stacked


class CohortRepository:
    def __init__(self, database: Database) -> None:
        self._database = database

    def version(self) -> int:
        """Changes whenever a face joins or leaves the cohort."""
        return int(self._database.meta("score_cohort_version") or 0)

    def members(self) -> CohortMembers:
        """The cohort's faces with their vectors, and the version they were read at."""
        with self._database.reading() as db:  # one hold of the (reentrant) lock: no change in between
            version = self.version()
            rows = db.execute(
                "SELECT f.id, f.embedding FROM score_cohort c JOIN faces f ON f.id = c.face_id ORDER BY f.id"
            ).fetchall()
        return CohortMembers(
            version=version,
            face_ids=np.asarray([row["id"] for row in rows], np.int64),
            vectors=stacked([row["embedding"] for row in rows]),
        )

    def counts(self) -> tuple[int, int]:
        """Faces in the cohort, and stored faces outside it."""
        row = self._database.read(
            "SELECT (SELECT COUNT(*) FROM score_cohort) AS members, "
            "(SELECT COUNT(*) FROM faces) - (SELECT COUNT(*) FROM score_cohort) AS others"
        )[0]
        return int(row["members"]), int(row["others"])

    def newest_face_id(self) -> int:
        """The highest face id so far (ids grow with every stored face); 0 for an empty store."""
        return int(self._database.read("SELECT COALESCE(MAX(id), 0) AS newest FROM faces")[0]["newest"])

    def drawn_at(self) -> int:
        """Stored faces when the cohort last changed by a draw (``add`` or ``replace``)."""
        return int(self._database.meta("score_cohort_drawn_at") or 0)

    def candidates(
        self, batch_size: int = 1024, *, afresh: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Faces to draw the cohort from, in random order, as batches of ids and vectors: every photo
        face and one face of each video person (a person's vectors are one identity, however many
        tracks and poses they span). To top up: only faces outside the cohort, and no person who has
        a face in it; ``afresh``: every stored face, for a new draw.

        Reads through its own connection (WAL): a draw over a large store holds no lock. The order
        is drawn over ids alone; the vectors are read a batch at a time.
        """
        outside = "" if afresh else "WHERE f.id NOT IN (SELECT face_id FROM score_cohort)"
        represented = (
            ""
            if afresh
            else "AND NOT EXISTS (SELECT 1 FROM score_cohort c JOIN faces g ON g.id = c.face_id "
            "JOIN tracks u ON u.id = g.track_id WHERE u.media_id = video AND u.person = who)"
        )
        db = self._database.separate_reader()
        try:
            order = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM ("
                    "  SELECT f.id, t.media_id AS video, t.person AS who, ROW_NUMBER() OVER ("
                    f"   PARTITION BY t.media_id, t.person ORDER BY random()) AS nth"
                    f"  FROM faces f LEFT JOIN tracks t ON t.id = f.track_id {outside}"
                    f") WHERE who IS NULL OR (nth = 1 {represented}) ORDER BY random()"
                )
            ]
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                found = dict(
                    db.execute(f"SELECT id, embedding FROM faces WHERE id {IN_LIST}", (as_list(batch),))
                )
                ids = [face_id for face_id in batch if face_id in found]  # deleted meanwhile: skipped
                if ids:
                    yield np.asarray(ids, np.int64), stacked([found[face_id] for face_id in ids])
        finally:
            db.close()

    def add(self, face_ids: list[int]) -> None:
        """Faces join the cohort (those deleted meanwhile are skipped); the store's size is recorded
        as ``drawn_at``."""
        with self._database.transaction() as db:
            self._insert(db, face_ids)

    def replace(self, face_ids: list[int]) -> None:
        """A new cohort instead of the old, in one transaction, recorded as ``add`` records."""
        with self._database.transaction() as db:
            db.execute("DELETE FROM score_cohort")
            self._insert(db, face_ids)

    @staticmethod
    def _insert(db: sqlite3.Connection, face_ids: list[int]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO score_cohort (face_id) SELECT id FROM faces WHERE id = ?",
            [(face_id,) for face_id in face_ids],
        )
        db.execute("UPDATE meta SET value = (SELECT COUNT(*) FROM faces) WHERE key = 'score_cohort_drawn_at'")
