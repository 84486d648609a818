"""Vector index backends behind one interface (``base.FaceIndex``)."""

from __future__ import annotations

from search_service.index.base import FaceIndex
from search_service.index.embedded import EmbeddedIndex
from search_service.settings import SearchSettings


def create_index(settings: SearchSettings) -> FaceIndex:
    """The backend named by ``INDEX_BACKEND``."""
    if settings.index_backend == "embedded":
        return EmbeddedIndex(
            settings.data_dir / "index",
            hnsw_min_faces=settings.hnsw_min_faces,
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.hnsw_ef_construction,
            ef_search=settings.hnsw_ef_search,
            max_dead_fraction=settings.hnsw_max_dead_fraction,
            threads=settings.index_threads,
        )
    raise NotImplementedError(
        f"INDEX_BACKEND={settings.index_backend} is not implemented yet; use 'embedded'"
    )
