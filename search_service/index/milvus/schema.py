"""The Milvus collection this backend creates: its fields, its indexes, and its rows.

One row per face: the face id as primary key, the vector, and the scalar fields searches filter
on (collection, source) or deletes select by (media id), each with an INVERTED index of its own.
(``FaceBatch`` carries no video track, so none is stored: hits are described from the store.)
The vector gets an HNSW index with metric IP, which on the unit vectors the embedder sends is
cosine similarity. Why: docs/decisions/index.md.

The backend creates the collection itself, so its layout can only be what this module says. The
id of the store it was built from and a fingerprint of the layout sit in the collection's
properties; a collection whose properties disagree is rebuilt, one without them is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pymilvus import CollectionSchema, DataType, MilvusClient
from pymilvus.milvus_client import IndexParams

from search_service.domain import SOURCES, FaceBatch
from search_service.index.base import IndexMismatch, IndexState, layout_fingerprint
from search_service.settings import MilvusSettings

PRIMARY = "face_id"
VECTOR = "vector"
MEDIA = "media_id"
SOURCE = "source"
COLLECTION = "collection"
METRIC = "IP"
VECTOR_INDEX = "HNSW"
SCALAR_INDEX = "INVERTED"
# Scalar fields that filters or deletes select on, each indexed.
FILTERED = (MEDIA, SOURCE, COLLECTION)
INDEXED = (VECTOR, *FILTERED)
# VARCHAR limits, in bytes of UTF-8. Collection names are user strings (the API allows 128
# characters of a safe alphabet); anything longer is refused before it reaches the server.
SOURCE_MAX_BYTES = 16
COLLECTION_MAX_BYTES = 1024
# Milvus's default is Bounded; Strong makes a write visible to the next search on any handle.
CONSISTENCY = "Strong"
STORE_PROPERTY = "facesearch.store_id"
LAYOUT_PROPERTY = "facesearch.layout"
# Bumped when the row layout changes in a way the fingerprint cannot see.
_FORMAT = 1


def layout(settings: MilvusSettings) -> dict[str, Any]:
    """Everything about the collection except its dimension, as plain data (for the fingerprint)."""
    return {
        "fields": [
            [PRIMARY, "INT64", "primary"],
            [VECTOR, "FLOAT_VECTOR"],
            [MEDIA, "INT64"],
            [SOURCE, "VARCHAR", SOURCE_MAX_BYTES],
            [COLLECTION, "VARCHAR", COLLECTION_MAX_BYTES],
        ],
        "vector_index": {
            "index_type": VECTOR_INDEX,
            "metric_type": METRIC,
            "params": {"M": settings.hnsw_m, "efConstruction": settings.ef_construction},
        },
        "scalar_indexes": {field: SCALAR_INDEX for field in FILTERED},
    }


def fingerprint(settings: MilvusSettings) -> str:
    return layout_fingerprint([_FORMAT, layout(settings)])


def wanted_state(settings: MilvusSettings, dimension: int, store_id: str) -> IndexState:
    return IndexState(dimension, store_id, fingerprint(settings))


def schema(dimension: int) -> CollectionSchema:
    fields = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    fields.add_field(PRIMARY, DataType.INT64, is_primary=True)
    fields.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dimension)
    fields.add_field(MEDIA, DataType.INT64)
    fields.add_field(SOURCE, DataType.VARCHAR, max_length=SOURCE_MAX_BYTES)
    fields.add_field(COLLECTION, DataType.VARCHAR, max_length=COLLECTION_MAX_BYTES)
    return fields


def index_params(settings: MilvusSettings, field: str) -> IndexParams:
    """The index of one field (of ``INDEXED``), named after the field."""
    params = MilvusClient.prepare_index_params()
    if field == VECTOR:
        params.add_index(field_name=VECTOR, index_name=VECTOR, **layout(settings)["vector_index"])
    elif field in FILTERED:
        params.add_index(field_name=field, index_name=field, index_type=SCALAR_INDEX)
    else:
        raise ValueError(f"{field!r} has no index")
    return params


def properties(settings: MilvusSettings, store_id: str) -> dict[str, str]:
    return {STORE_PROPERTY: store_id, LAYOUT_PROPERTY: fingerprint(settings)}


def read_state(name: str, description: dict[str, Any]) -> IndexState:
    """The state in a ``describe_collection`` answer; IndexMismatch unless facesearch made it."""
    props = description.get("properties") or {}
    if STORE_PROPERTY not in props:
        # Never drop what this service did not create.
        raise IndexMismatch(
            f"Milvus collection {name!r} exists but was not created by facesearch; "
            "configure another collection name"
        )
    vectors = [field for field in description.get("fields", []) if field.get("name") == VECTOR]
    if len(vectors) != 1 or "dim" not in vectors[0].get("params", {}):
        # Made by facesearch (its properties say so) but not with a layout this code can read.
        return IndexState(0, props.get(STORE_PROPERTY), None)
    return IndexState(int(vectors[0]["params"]["dim"]), props.get(STORE_PROPERTY), props.get(LAYOUT_PROPERTY))


def rows(batch: FaceBatch, positions: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The rows of these positions of the batch (all by default)."""
    vectors = np.asarray(batch.vectors, np.float32)
    out = []
    for row in range(len(batch)) if positions is None else positions:
        collection = batch.collections[row]
        if len(collection.encode()) > COLLECTION_MAX_BYTES:
            raise ValueError(
                f"collection name longer than {COLLECTION_MAX_BYTES} bytes: {collection[:40]!r}..."
            )
        source = batch.sources[row]
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        out.append(
            {
                PRIMARY: int(batch.face_ids[row]),
                # float32 -> Python float is exact, and so is the server's float32 back.
                VECTOR: vectors[row].tolist(),
                MEDIA: int(batch.media_ids[row]),
                SOURCE: source,
                COLLECTION: collection,
            }
        )
    return out
