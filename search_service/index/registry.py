"""Which index backends exist, by the name ``INDEX_BACKEND`` gives them, and how each is built.

A backend is one entry here: a factory from the service settings, which imports its module only
when called, so that a backend's dependencies (faiss, opensearch-py, pymilvus) load only where it
is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from search_service.index.base import FaceIndex
from search_service.settings import SearchSettings

IndexFactory = Callable[[SearchSettings], FaceIndex]


def _embedded(settings: SearchSettings) -> FaceIndex:
    from search_service.index.embedded import EmbeddedIndex

    return EmbeddedIndex(settings.data_dir / "index", settings.hnsw)


def _opensearch(settings: SearchSettings) -> FaceIndex:
    from search_service.index.opensearch import OpenSearchIndex

    return OpenSearchIndex(settings.opensearch)


def _milvus(settings: SearchSettings) -> FaceIndex:
    from search_service.index.milvus import MilvusIndex

    return MilvusIndex(settings.milvus)


BACKENDS: Mapping[str, IndexFactory] = {
    "embedded": _embedded,
    "opensearch": _opensearch,
    "milvus": _milvus,
}


def create_index(settings: SearchSettings) -> FaceIndex:
    """The backend named by ``settings.index_backend``, not yet opened."""
    factory = BACKENDS.get(settings.index_backend)
    if factory is None:
        raise ValueError(f"unknown INDEX_BACKEND {settings.index_backend!r}; known: {', '.join(BACKENDS)}")
    return factory(settings)
