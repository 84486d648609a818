"""The OpenSearch index this backend creates: its settings, its mapping, and its documents.

The backend creates the index itself, so the mapping can only be what this module says. A
fingerprint of the mapping and the id of the store the index was built from sit in the mapping's
``_meta``; an index whose ``_meta`` disagrees is rebuilt, and one without it is never touched.
Why lucene HNSW and the innerproduct space: docs/decisions/index.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from search_service.domain import FaceBatch
from search_service.index.base import IndexMismatch, IndexState, layout_fingerprint
from search_service.settings import OpenSearchSettings

ENGINE = "lucene"
SPACE_TYPE = "innerproduct"
VECTOR_FIELD = "vector"
# Bumped when the document layout changes in a way the mapping fingerprint cannot see.
_FORMAT = 1
# Set explicitly: when it is left unset, shards that go search-idle skip scheduled refreshes,
# which would hold a `refresh=wait_for` write until the next search arrives.
_REFRESH_INTERVAL = "1s"


def mapping(settings: OpenSearchSettings, dimension: int) -> dict[str, Any]:
    return {
        # A field the code does not know about is a bug: refuse it instead of guessing a type.
        "dynamic": "strict",
        "properties": {
            VECTOR_FIELD: {
                "type": "knn_vector",
                "dimension": dimension,
                "method": {
                    "name": "hnsw",
                    "engine": ENGINE,
                    "space_type": SPACE_TYPE,
                    "parameters": {"m": settings.hnsw_m, "ef_construction": settings.ef_construction},
                },
            },
            # Keyword: only ever matched exactly (terms, filters) or sorted for the id scan,
            # where numeric point fields would index ranges nobody asks for.
            "face_id": {"type": "keyword"},
            "media_id": {"type": "keyword"},
            "source": {"type": "keyword"},
            "collection": {"type": "keyword"},
        },
    }


def fingerprint(settings: OpenSearchSettings, dimension: int) -> str:
    return layout_fingerprint([_FORMAT, mapping(settings, dimension)])


def wanted_state(settings: OpenSearchSettings, dimension: int, store_id: str) -> IndexState:
    return IndexState(dimension, store_id, fingerprint(settings, dimension))


def create_body(settings: OpenSearchSettings, dimension: int, store_id: str) -> dict[str, Any]:
    meta = {"facesearch": {"store_id": store_id, "mapping": fingerprint(settings, dimension)}}
    return {
        "settings": {
            "index": {
                "knn": True,
                "number_of_shards": settings.shards,
                "number_of_replicas": settings.replicas,
                "refresh_interval": _REFRESH_INTERVAL,
            }
        },
        "mappings": mapping(settings, dimension) | {"_meta": meta},
    }


def read_state(name: str, response: dict[str, Any]) -> IndexState:
    """The state in a ``GET <name>/_mapping`` answer; IndexMismatch unless facesearch made it."""
    if len(response) != 1:
        raise IndexMismatch(f"{name!r} names {len(response)} OpenSearch indices; it must name one")
    index_mapping = next(iter(response.values()))["mappings"]
    meta = index_mapping.get("_meta", {}).get("facesearch")
    if meta is None:
        # Never delete what this service did not create.
        raise IndexMismatch(
            f"OpenSearch index {name!r} exists but was not created by facesearch; "
            "configure another index name"
        )
    dimension = int(index_mapping["properties"][VECTOR_FIELD]["dimension"])
    return IndexState(dimension, meta.get("store_id"), meta.get("mapping"))


def documents(index: str, batch: FaceBatch, rows: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
    """Bulk index actions for these rows of the batch (all by default); the document id is the
    face id, so indexing a face twice leaves one document."""
    vectors = np.asarray(batch.vectors, np.float32)
    for row in range(len(batch)) if rows is None else rows:
        face_id = int(batch.face_ids[row])
        yield {
            "_index": index,
            "_id": str(face_id),
            "_source": {
                "face_id": face_id,
                "media_id": int(batch.media_ids[row]),
                "source": batch.sources[row],
                "collection": batch.collections[row],
                # float32 -> Python float is exact, and so is the server's parse back.
                VECTOR_FIELD: vectors[row].tolist(),
            },
        }
