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
    if settings.index_backend == "opensearch":
        # Imported here: only this backend needs the OpenSearch client at start-up.
        from search_service.index.opensearch import OpenSearchIndex

        auth = None
        if settings.opensearch_username and settings.opensearch_password:
            auth = (settings.opensearch_username, settings.opensearch_password.get_secret_value())
        return OpenSearchIndex(
            settings.opensearch_url,
            index_name=settings.opensearch_index,
            shards=settings.opensearch_shards,
            replicas=settings.opensearch_replicas,
            hnsw_m=settings.opensearch_hnsw_m,
            ef_construction=settings.opensearch_ef_construction,
            ef_search=settings.opensearch_ef_search,
            timeout_s=settings.opensearch_timeout_s,
            bulk_timeout_s=settings.opensearch_bulk_timeout_s,
            retries=settings.opensearch_retries,
            connect_wait_s=settings.opensearch_connect_wait_s,
            http_auth=auth,
            verify_certs=settings.opensearch_verify_certs,
            ca_certs=str(settings.opensearch_ca_certs) if settings.opensearch_ca_certs else None,
        )
    raise ValueError(f"unknown INDEX_BACKEND {settings.index_backend!r}")
