"""The filter expressions and search requests this backend sends, and how it reads answers back.

The collection and source filters are a boolean ``filter`` expression of the search itself, so
Milvus applies them inside the ANN search (k hits whenever k rows pass), never after it.
Collection names are user strings: each reaches the expression as a double-quoted literal with
its backslashes, quotes and line breaks escaped (``string_literal``), the escapes that both the
server's grammar and Milvus Lite's read the same way. (pymilvus can also send template values,
``filter_params``, which Milvus Lite does not implement; one path for both keeps one behaviour.)

Scores come back as Milvus's IP ``distance``: the inner product itself, which on unit vectors is
the cosine similarity the match threshold means (docs/decisions/index.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from search_service.domain import SOURCES, Source
from search_service.index.base import IndexHit
from search_service.index.milvus.schema import COLLECTION, MEDIA, METRIC, PRIMARY, SOURCE

# Milvus's ceiling on a search's limit (topk).
MAX_K = 16_384
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def string_literal(value: str) -> str:
    """``value`` as a Milvus expression string literal that reads back as exactly ``value``."""
    return '"' + value.translate(_ESCAPES) + '"'


def int_list(values: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(value)) for value in values) + "]"


def search_filter(collection: str | None, source: Source | None) -> str:
    """The search's filter expression; empty when nothing is filtered."""
    terms = []
    if collection is not None:
        terms.append(f"{COLLECTION} == {string_literal(collection)}")
    if source is not None:
        if source not in SOURCES:  # a literal type, but this string too ends up in the expression
            raise ValueError(f"unknown source {source!r}")
        terms.append(f"{SOURCE} == {string_literal(source)}")
    return " and ".join(terms)


def media_filter(media_ids: Sequence[int]) -> str:
    return f"{MEDIA} in {int_list(media_ids)}"


def face_filter(face_ids: Iterable[int]) -> str:
    return f"{PRIMARY} in {int_list(face_ids)}"


def search_params(ef_search: int, k: int) -> dict[str, Any]:
    """HNSW needs a candidate list at least as long as the hits asked for."""
    return {"metric_type": METRIC, "params": {"ef": max(ef_search, k)}}


def cosine(distance: float) -> float:
    """Cosine similarity from Milvus's IP distance: the inner product of two unit vectors is their
    cosine, and Milvus returns it as is (larger is nearer), so only the type changes."""
    return float(distance)


def hits(answer: Iterable[Iterable[dict[str, Any]]]) -> list[list[IndexHit]]:
    """One list of hits per query vector, best first, from a ``MilvusClient.search`` answer."""
    return [
        [IndexHit(int(hit[PRIMARY]), int(hit["entity"][MEDIA]), cosine(hit["distance"])) for hit in one]
        for one in answer
    ]
