"""Search by photo: every face in the query gets its own ranked list of stored faces."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from prometheus_client import Histogram

from search_service.domain import (
    HitSource,
    PersonVectors,
    QueryFaceResult,
    RankedHit,
    SearchQuery,
    SearchResult,
    TimeRange,
    Upload,
)
from search_service.errors import NoFaceError
from search_service.index.base import FaceIndex, IndexHit
from search_service.services.faces import FaceDetector
from search_service.storage.faces import FaceRepository

INDEX_SEARCH_SECONDS = Histogram(
    "facesearch_index_search_seconds",
    "Time in the vector index per search request (all faces of the query)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)

# One person in a video is several vectors (a few per track) but one hit: the index is asked for
# this many times k at first, and again for this factor more while merging left fewer than k.
_OVERFETCH = 4
# A track's start lies inside exactly one of its person's merged ranges; float slack for the test.
_EPSILON = 1e-6


def distinct_hits(
    hits: list[IndexHit], sources: dict[int, HitSource], k: int, threshold: float
) -> list[tuple[IndexHit, list[HitSource]]]:
    """Up to k hits, best first: one per photo face, one per video person, except that every
    person of a video who matches the query joins that video's best matching hit.

    The tracker keeps two tracks apart when it is unsure they are one person (different
    people's track means came as close as 0.977 on the real clips); a query photo that matches
    both is the better judge, so the client gets one video with all of that person's ranges.
    """
    kept: list[tuple[IndexHit, list[HitSource]]] = []
    seen: set[tuple[int, int]] = set()
    matching: dict[int, list[HitSource]] = {}  # video id -> people of its best matching hit
    for hit in hits:
        where = sources.get(hit.face_id)
        if where is None:  # deleted between the index answer and this lookup
            continue
        is_match = hit.score >= threshold
        if where.person is not None:
            if (where.media_id, where.person) in seen:
                continue
            seen.add((where.media_id, where.person))
            group = matching.get(where.media_id)
            if group is not None and is_match:
                group.append(where)
                continue
        if len(kept) == k:
            continue  # full, but later people may still join a kept video's hit
        people = [where]
        kept.append((hit, people))
        if where.person is not None and is_match:
            matching[where.media_id] = people
    return kept


def merged_ranges(
    query: np.ndarray, people: list[HitSource], vectors: dict[tuple[int, int], PersonVectors]
) -> tuple[list[TimeRange] | None, list[float] | None]:
    """Videos: the people's time ranges, merged where they overlap, each with the query's best
    similarity to the tracks that start inside it."""
    scored: list[tuple[float, float, float]] = []
    for where in people:
        person = None if where.person is None else vectors.get((where.media_id, where.person))
        if person is None or where.time_ranges is None:  # a photo, or a video deleted meanwhile
            return people[0].time_ranges, None
        scores = person.vectors @ query
        for start, end in where.time_ranges:
            inside = (person.track_starts >= start - _EPSILON) & (person.track_starts <= end + _EPSILON)
            scored.append((start, end, float(scores[inside].max()) if inside.any() else float("nan")))
    merged: list[list[float]] = []
    for start, end, score in sorted(scored):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = max(merged[-1][2], score)
        else:
            merged.append([start, end, score])
    return [(start, end) for start, end, _ in merged], [score for *_, score in merged]


class SearchService:
    def __init__(
        self, faces: FaceRepository, index: FaceIndex, detector: FaceDetector, threshold: float | None
    ) -> None:
        self._faces = faces
        self._index = index
        self._detector = detector
        self._threshold = threshold  # None: the embedding model's own

    async def search(self, upload: Upload, query: SearchQuery) -> SearchResult:
        detection = await self._detector.detect([upload])
        [image] = detection.images
        if not image.faces:
            raise NoFaceError(f"no face found in the query photo {upload.filename!r}")
        vectors = np.stack([face.embedding for face in image.faces])
        threshold = next(
            value
            for value in (query.threshold, self._threshold, detection.match_threshold)
            if value is not None
        )
        per_face = await asyncio.to_thread(self._rank, vectors, query, threshold)
        return SearchResult(
            threshold=threshold,
            faces=[
                QueryFaceResult(box=face.box, score=face.score, hits=hits)
                for face, hits in zip(image.faces, per_face, strict=True)
            ],
        )

    def _rank(self, vectors: np.ndarray, query: SearchQuery, threshold: float) -> list[list[RankedHit]]:
        """Per query vector, up to k hits best first, one per photo face or video person."""
        k = query.k
        fetch = k if query.source == "image" else k * _OVERFETCH
        index_seconds = 0.0
        while True:
            started = time.perf_counter()
            per_face = self._index.search(vectors, fetch, collection=query.collection, source=query.source)
            index_seconds += time.perf_counter() - started
            sources = self._faces.describe([hit.face_id for hits in per_face for hit in hits])
            kept = [distinct_hits(hits, sources, k, threshold) for hits in per_face]
            # Fewer than `fetch` answers means the index has nothing more to give.
            if all(
                len(hits) == k or len(answer) < fetch for hits, answer in zip(kept, per_face, strict=True)
            ):
                break
            fetch *= _OVERFETCH
        INDEX_SEARCH_SECONDS.observe(index_seconds)
        vectors_of = self._faces.person_vectors(
            {
                (where.media_id, where.person)
                for hits in kept
                for _, people in hits
                for where in people
                if where.person is not None
            }
        )
        return [
            [
                RankedHit(
                    hit.score, hit.score >= threshold, people[0], *merged_ranges(vector, people, vectors_of)
                )
                for hit, people in hits
            ]
            for vector, hits in zip(vectors, kept, strict=True)
        ]
