"""The one interface between the search service and a vector index backend.

The SQLite store is the source of truth; an index only answers "which stored faces are nearest
to these vectors", under exact collection and source filters. Every backend passes the shared
conformance suite in ``tests/search/index/conformance.py``; ``registry.py`` names them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from search_service.domain import FaceBatch, Source

__all__ = ["FaceIndex", "FaceSource", "IndexHealth", "IndexHit"]


@dataclass(frozen=True)
class IndexHit:
    face_id: int
    media_id: int
    score: float  # cosine similarity


@dataclass(frozen=True)
class IndexHealth:
    backend: str
    ok: bool
    faces: int
    details: dict[str, Any] = field(default_factory=dict)


class FaceSource(Protocol):
    """What an index may read from the source of truth when it opens (the SQLite store)."""

    @property
    def store_id(self) -> str:
        """Identifies one store for its whole life, so an index can tell it was built from another."""
        ...

    def face_batches(self, batch_size: int = 10_000) -> Iterator[FaceBatch]:
        """Every stored face, in ascending face id."""
        ...


class IndexMismatch(RuntimeError):
    """A server-side index (collection) under the configured name cannot serve this store as it is."""


@dataclass(frozen=True)
class IndexState:
    """What an existing server-side index (collection) says about itself."""

    dimension: int
    store_id: str | None
    fingerprint: str | None


def layout_fingerprint(layout: object) -> str:
    """A short, stable hash of a JSON-able layout (the format version and what the backend creates)."""
    text = json.dumps(layout, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checked_queries(vectors: np.ndarray, k: int, *, max_k: int | None, dimension: int | None) -> np.ndarray:
    """Query vectors as (n, d) float32 rows, with ``k`` and (once the index has one) ``d`` checked."""
    if k < 1 or (max_k is not None and k > max_k):
        raise ValueError(
            f"k must be at least 1, got {k}" if max_k is None else f"k must be within 1..{max_k}, got {k}"
        )
    rows = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    if dimension is not None and len(rows) and rows.shape[1] != dimension:
        raise ValueError(f"query has {rows.shape[1]} dimensions, the index {dimension}")
    return rows


class FaceIndex(ABC):
    """Nearest-neighbour search over stored faces. Implementations are thread-safe."""

    name: str
    # The most hits one query may ask for; None: no limit.
    max_k: int | None = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background work (a graph build); True when none is running. Most have none."""
        return True

    @abstractmethod
    def open(self, source: FaceSource) -> None:
        """Load, and reconcile with the store: afterwards every stored face is searchable."""

    @abstractmethod
    def drop(self) -> None:
        """Delete everything the backend keeps of this index, persisted state included, so that the
        next ``open`` builds it anew from the store (``python -m search_service.reindex --rebuild``)."""

    @abstractmethod
    def add(self, batch: FaceBatch) -> None:
        """Make committed faces searchable. Called after the store commit."""

    @abstractmethod
    def remove_media(self, media_ids: Sequence[int]) -> None:
        """Remove every face of these photos or videos; they must not appear in any later search."""

    @abstractmethod
    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        collection: str | None = None,
        source: Source | None = None,
    ) -> list[list[IndexHit]]:
        """Per query vector (rows of ``vectors``), the ``k`` most similar faces, best first.

        Filters are exact: when at least ``k`` faces pass them, exactly ``k`` hits come back.
        """

    @abstractmethod
    def count(self) -> int:
        """Faces currently searchable."""

    @abstractmethod
    def health(self) -> IndexHealth: ...

    @abstractmethod
    def close(self) -> None:
        """Persist what is worth keeping and release resources."""
