"""The embedded index's in-memory table of faces: one growable numpy column per attribute.

Columns rather than one object per face, so that a million faces cost their vectors and a few
bytes each, and a filter is one vectorised comparison. Collections and sources are stored as small
integer codes. Row i is node i of the HNSW graph built over the table (``graph.py``).
"""

from __future__ import annotations

import numpy as np

from search_service.domain import SOURCES, FaceBatch, Source

SOURCE_CODES: dict[Source, int] = {source: code for code, source in enumerate(SOURCES)}


class CollectionCodes:
    """Collection name -> small integer, assigned on first sight and never reused."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def encode(self, name: str) -> int:
        return self._codes.setdefault(name, len(self._codes))

    def lookup(self, name: str) -> int:
        """The code of a known collection; -1 (matches no row) for one never seen."""
        return self._codes.get(name, -1)


class FaceColumns:
    """Growable column arrays, one row per face; rows are only ever appended or marked dead."""

    NAMES = ("face_ids", "media_ids", "sources", "collections", "alive", "vectors")

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        self.dimension = dimension
        self.n = 0
        self.face_ids = np.empty(capacity, np.int64)
        self.media_ids = np.empty(capacity, np.int64)
        self.sources = np.empty(capacity, np.int8)
        self.collections = np.empty(capacity, np.int32)
        self.alive = np.empty(capacity, bool)
        self.vectors = np.empty((capacity, dimension), np.float32)

    @staticmethod
    def encode(batch: FaceBatch, collections: CollectionCodes) -> dict[str, np.ndarray]:
        """A batch as the columns of new, live rows."""
        return {
            "face_ids": np.asarray(batch.face_ids, np.int64),
            "media_ids": np.asarray(batch.media_ids, np.int64),
            "sources": np.fromiter((SOURCE_CODES[s] for s in batch.sources), np.int8, len(batch)),
            "collections": np.fromiter(
                (collections.encode(c) for c in batch.collections), np.int32, len(batch)
            ),
            "alive": np.ones(len(batch), bool),
            "vectors": np.asarray(batch.vectors, np.float32),
        }

    def _reserve(self, extra: int) -> None:
        needed = self.n + extra
        if needed <= len(self.face_ids):
            return
        capacity = max(needed, 2 * len(self.face_ids))
        for name in self.NAMES:
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), old.dtype)
            new[: self.n] = old[: self.n]
            # Readers holding the old array keep a valid (if shorter) view: only appends happen here.
            setattr(self, name, new)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        count = len(columns["face_ids"])
        self._reserve(count)
        for name in self.NAMES:
            getattr(self, name)[self.n : self.n + count] = columns[name]
        # Counted last: a background graph build reads rows below n without the lock.
        self.n += count

    def columns(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[positions] for name in self.NAMES}

    def take(self, positions: np.ndarray) -> FaceColumns:
        """A new table of these rows, in this order."""
        table = FaceColumns(self.dimension, max(len(positions), 1024))
        table.append(self.columns(positions))
        return table

    def live_positions(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.n])

    def live_count(self) -> int:
        return int(np.count_nonzero(self.alive[: self.n]))
