"""Search by photo: every face in the query gets its own ranked list of stored faces."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import Histogram
from starlette.concurrency import run_in_threadpool

from search_service.domain import HitSource, Upload
from search_service.embedder_client import EmbedderClient
from search_service.errors import NoFaceError
from search_service.index.base import FaceIndex, IndexHit, Source
from search_service.schemas import Hit, QueryFace, SearchParams, SearchResponse
from search_service.services.model_guard import ModelGuard
from search_service.store import Store

INDEX_SEARCH_SECONDS = Histogram(
    "facesearch_index_search_seconds",
    "Time in the vector index per search request (all faces of the query)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)

_SOURCES: dict[str, Source | None] = {"images": "image", "videos": "video", "all": None}


def _hit(hit: IndexHit, where: HitSource, threshold: float) -> Hit:
    return Hit(
        score=hit.score,
        match=hit.score >= threshold,
        source=where.source,
        id=where.media_id,
        face_id=where.face_id,
        external_id=where.external_id,
        collection=where.collection,
        box=where.box,
        time_ranges=where.time_ranges,
    )


class SearchService:
    def __init__(
        self, store: Store, index: FaceIndex, embedder: EmbedderClient, guard: ModelGuard, threshold: float
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._guard = guard
        self._threshold = threshold

    async def search(self, upload: Upload, params: SearchParams) -> SearchResponse:
        [query] = await self._embedder.detect([upload])
        if not query.faces:
            raise NoFaceError(f"no face found in the query photo {upload.filename!r}")
        await self._guard.check([query])
        vectors = np.stack([face.embedding for face in query.faces])
        started = time.perf_counter()
        per_face = await run_in_threadpool(
            lambda: self._index.search(
                vectors, params.k, collection=params.collection, source=_SOURCES[params.source]
            )
        )
        INDEX_SEARCH_SECONDS.observe(time.perf_counter() - started)
        sources = await run_in_threadpool(
            self._store.describe_faces, [hit.face_id for hits in per_face for hit in hits]
        )
        threshold = self._threshold if params.threshold is None else params.threshold
        return SearchResponse(
            threshold=threshold,
            faces=[
                QueryFace(
                    box=face.box,
                    score=face.score,
                    # A face deleted between the index answer and this lookup is simply dropped.
                    hits=[
                        _hit(hit, sources[hit.face_id], threshold) for hit in hits if hit.face_id in sources
                    ],
                )
                for face, hits in zip(query.faces, per_face, strict=True)
            ],
        )
