"""Search by photo or by video clip: every face in the photo, every person in the clip, gets its own
ranked list of stored faces."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from prometheus_client import Histogram

from search_service.domain import (
    FaceObservation,
    HitSource,
    ModelThresholds,
    Person,
    PersonVectors,
    QueryFaceResult,
    RankedHit,
    ScoreKind,
    SearchQuery,
    SearchResult,
    TimeRange,
    Upload,
    VideoAnalysis,
)
from search_service.errors import (
    ClipTooLongError,
    EmbedderUnavailableError,
    NoFaceError,
    NotAVideoError,
    NotFoundError,
    ShuttingDownError,
)
from search_service.index.base import FaceIndex, IndexHit
from search_service.services.asnorm import CohortScorer, FaceStatistics
from search_service.services.cohort import ScoreCohort
from search_service.services.faces import FaceDetector
from search_service.services.frames import FrameEmbedder
from search_service.services.jobs import JobControl
from search_service.services.videos import analyse_video
from search_service.settings import ScoringSettings, VideoSettings
from search_service.storage.faces import FaceRepository
from search_service.video import VideoCancelled, VideoDecodeError, probe
from search_service.video.tracker import select_representatives

log = structlog.get_logger(__name__)

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
# AS-norm re-ranks at least this many of the index's answers per query vector: a face close to
# everyone (small, blurred) has many strangers above its true matches by cosine.
_NORMALIZED_POOL = 100
# A person of a query clip is searched with at most this many of their face vectors (see
# query_vectors and docs/decisions/search.md).
MAX_QUERY_VECTORS = 4
# Query vectors closer than this cosine distance are near duplicates: one of them is enough.
_QUERY_VECTOR_MIN_DISTANCE = 0.04


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


def best_of(answers: list[list[IndexHit]], fetch: int) -> list[IndexHit]:
    """One ranked list from the index's answers (each up to ``fetch`` hits) for the vectors of one
    query face: every stored face at its best score over them.

    The list stops at the lowest score that every full answer reaches: a face missing from all of
    them scores below each full answer's last hit, so above that score nothing is missing.
    """
    if len(answers) == 1:
        return answers[0]
    best: dict[int, IndexHit] = {}
    for hits in answers:
        for hit in hits:
            if hit.face_id not in best or hit.score > best[hit.face_id].score:
                best[hit.face_id] = hit
    floor = max((hits[-1].score for hits in answers if len(hits) >= fetch), default=-math.inf)
    return sorted((hit for hit in best.values() if hit.score >= floor), key=lambda hit: -hit.score)


@dataclass(frozen=True)
class Scoring:
    """How one search scores its hits: by cosine, or by AS-norm against ``scorer``'s cohort."""

    threshold: float
    scorer: CohortScorer | None = None

    @property
    def kind(self) -> ScoreKind:
        return "cosine" if self.scorer is None else "as_norm"


@dataclass(frozen=True)
class CandidatePool:
    """Stored faces that some query face's index answers named: ids (ascending), vectors as rows,
    and their AS-norm statistics, computed once for all the query faces."""

    ids: np.ndarray
    vectors: np.ndarray
    statistics: FaceStatistics

    @classmethod
    def of(cls, stored: tuple[np.ndarray, np.ndarray], scorer: CohortScorer) -> CandidatePool:
        ids, vectors = stored
        return cls(ids, vectors, scorer.statistics(vectors))


def normalized_ranking(
    queries: np.ndarray, candidates: dict[int, IndexHit], pool: CandidatePool, scorer: CohortScorer
) -> tuple[list[IndexHit], dict[int, float]]:
    """The candidates of one query face (its vectors as rows) ranked by AS-norm score, best first,
    each scoring its best over the vectors; and their cosines (likewise their best), by face id.

    Both scores are computed here for every pair, so a candidate that one vector's answer left out
    is scored as exactly as the others; candidates deleted meanwhile (absent from ``pool``) drop out."""
    keep = np.isin(pool.ids, np.fromiter(candidates, np.int64, len(candidates)))
    if not keep.any():
        return [], {}
    ids, vectors = pool.ids[keep], pool.vectors[keep]
    targets = FaceStatistics(pool.statistics.mean[keep], pool.statistics.std[keep])
    cosines = queries @ vectors.T
    normalized = scorer.normalize(cosines, scorer.statistics(queries), targets).max(axis=0)
    order = np.argsort(-normalized, kind="stable")
    ranked = [IndexHit(int(ids[i]), candidates[int(ids[i])].media_id, float(normalized[i])) for i in order]
    return ranked, dict(zip(ids.tolist(), cosines.max(axis=0).tolist(), strict=True))


def query_vectors(person: Person) -> np.ndarray:
    """The vectors a person of a query clip is searched with: up to MAX_QUERY_VECTORS of the
    representatives of their tracks, as different from one another as they come (poses,
    lighting), chosen as the tracker chooses a track's (docs/decisions/search.md)."""
    candidates = np.concatenate([track.representatives for track in person.tracks]).astype(np.float32)
    return select_representatives(candidates, MAX_QUERY_VECTORS, _QUERY_VECTOR_MIN_DISTANCE)


def merged_ranges(
    query: np.ndarray, people: list[HitSource], vectors: dict[tuple[int, int], PersonVectors]
) -> tuple[list[TimeRange] | None, list[float] | None]:
    """Videos: the people's time ranges, merged where they overlap, each with the query's best
    similarity to the tracks that start inside it. ``query``: one vector, or a query face's
    vectors as rows (then each stored vector scores its best similarity to any of them)."""
    queries = np.atleast_2d(query)
    scored: list[tuple[float, float, float]] = []
    for where in people:
        person = None if where.person is None else vectors.get((where.media_id, where.person))
        if person is None or where.time_ranges is None:  # a photo, or a video deleted meanwhile
            return people[0].time_ranges, None
        scores = (person.vectors @ queries.T).max(axis=1)
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


def _ignore_progress(fraction: float, frames: int, faces: int) -> None:
    """A query clip reports no progress: its client is waiting for the answer itself."""


def _ms(seconds: float) -> float:
    """Times to the millisecond, as stored videos' are: finer is noise at a few samples per second."""
    return round(seconds, 3)


class SearchService:
    def __init__(
        self,
        faces: FaceRepository,
        index: FaceIndex,
        detector: FaceDetector,
        threshold: float | None,
        frames: FrameEmbedder,
        video: VideoSettings,
        cohort: ScoreCohort,
        scoring: ScoringSettings,
    ) -> None:
        self._faces = faces
        self._index = index
        self._detector = detector
        self._threshold = threshold  # None: the embedding model's own
        self._normalized_threshold = scoring.normalized_match_threshold  # likewise
        self._cohort = cohort
        self._frames = frames
        self._video = video
        self._clip_slots = asyncio.Semaphore(video.max_concurrent_queries)
        # Set to stop a clip analysis: its client went away, or the service is stopping.
        self._clip_stops: set[threading.Event] = set()

    def close(self) -> None:
        """Stop running clip analyses at their next batch of frames."""
        for stop in list(self._clip_stops):
            stop.set()

    async def search(self, upload: Upload, query: SearchQuery) -> SearchResult:
        detection = await self._detector.detect([upload])
        [image] = detection.images
        if not image.faces:
            raise NoFaceError(f"no face found in the query photo {upload.filename!r}")
        vectors = [face.embedding[np.newaxis] for face in image.faces]
        scoring, per_face = await asyncio.to_thread(self._search, vectors, query, detection.thresholds)
        return SearchResult(
            threshold=scoring.threshold,
            score_kind=scoring.kind,
            faces=[
                QueryFaceResult(box=face.box, score=face.score, hits=hits)
                for face, hits in zip(image.faces, per_face, strict=True)
            ],
        )

    async def search_clip(self, path: Path, filename: str, query: SearchQuery) -> SearchResult:
        """Every person in the clip at ``path``, as video ingest finds them (sampled frames, the
        embedder, tracks grouped into people), gets up to ``query.k`` hits, ranked as for a photo
        face. Nothing is stored; the caller owns (and removes) the file.

        Raises ClipTooLongError past ``max_query_seconds`` (judged from the container before
        decoding, and again while decoding), NotAVideoError for what does not decode, NoFaceError
        when nobody is found."""
        started = time.perf_counter()
        stop = threading.Event()
        self._clip_stops.add(stop)
        try:
            async with self._clip_slots:
                analysis, thresholds = await asyncio.to_thread(self._analyse_clip, path, filename, stop)
        except VideoCancelled as error:
            raise ShuttingDownError("the service is stopping; send the clip again") from error
        finally:
            # A cancelled request (the client went away) stops its analysis at the next batch.
            stop.set()
            self._clip_stops.discard(stop)
        if not analysis.people:
            raise NoFaceError(f"no face found in the query clip {filename!r}")
        vectors = [query_vectors(person) for person in analysis.people]
        scoring, per_person = await asyncio.to_thread(self._search, vectors, query, thresholds)
        faces = []
        for person, hits in zip(analysis.people, per_person, strict=True):
            best = person.best_track
            faces.append(
                QueryFaceResult(
                    box=best.best_box,
                    score=best.best_score,
                    hits=hits,
                    time_ranges=[(_ms(start), _ms(end)) for start, end in person.time_ranges],
                    best_time=_ms(best.best_time),
                    thumbnail_jpeg=best.thumbnail_jpeg or None,
                )
            )
        log.info(
            "clip searched",
            duration=analysis.duration,
            frames_sampled=analysis.frames_sampled,
            people=len(faces),
            vectors=sum(len(v) for v in vectors),
            seconds=round(time.perf_counter() - started, 3),
        )
        return SearchResult(threshold=scoring.threshold, score_kind=scoring.kind, faces=faces)

    async def search_face(
        self,
        face_id: int,
        query: SearchQuery,
        collections: Collection[str] | None,
    ) -> SearchResult:
        """Search with a stored face's vector, as with a photo's face; the face itself (for a video,
        its whole person) is left out of the hits. No embedder is needed, except to learn the match
        threshold of its model when neither the request nor the service names the one in use (its
        health probe's last answer, as ``GET /healthz`` reports it); while it is unreachable, a
        search that could rank by AS-norm ranks by cosine if SEARCH_MATCH_THRESHOLD is set.

        Raises NotFoundError for an unknown face, or one outside ``collections`` (None: every)."""
        stored = await asyncio.to_thread(self._faces.stored_face, face_id)
        if stored is None or (collections is not None and stored.where.collection not in collections):
            raise NotFoundError(f"no face with id {face_id}")
        thresholds = None
        if query.threshold is None:
            normalizing = await asyncio.to_thread(self._cohort.scorer) is not None
            setting = self._normalized_threshold if normalizing else self._threshold
            if setting is None:  # the threshold in use is the model's
                try:
                    thresholds = await self._detector.model_thresholds()
                except EmbedderUnavailableError:
                    if self._threshold is None:
                        raise
        scoring, [hits] = await asyncio.to_thread(
            self._search, [stored.vector[np.newaxis]], query, thresholds, stored.own_face_ids
        )
        where = stored.where
        return SearchResult(
            threshold=scoring.threshold,
            score_kind=scoring.kind,
            faces=[QueryFaceResult(box=where.box, score=stored.score, hits=hits)],
            origin=where,
        )

    def _search(
        self,
        queries: list[np.ndarray],
        query: SearchQuery,
        model: ModelThresholds | None,
        excluded: frozenset[int] = frozenset(),
    ) -> tuple[Scoring, list[list[RankedHit]]]:
        """How this search scores (a worker thread: it may read the cohort), and its ranked hits."""
        scoring = self._scoring_for(query, model)
        return scoring, self._rank(queries, query, scoring, excluded)

    def _scoring_for(self, query: SearchQuery, model: ModelThresholds | None) -> Scoring:
        """AS-norm while the cohort is full enough, unless the request names a (cosine) threshold
        or the model has no calibrated AS-norm threshold; cosine otherwise. Each threshold is the
        request's, else the service's setting, else the embedding model's own."""
        if query.threshold is not None:
            return Scoring(query.threshold)
        normalized = self._normalized_threshold
        if normalized is None and model is not None:
            normalized = model.normalized
        scorer = None if normalized is None else self._cohort.scorer()
        if normalized is not None and scorer is not None:
            return Scoring(normalized, scorer)
        if self._threshold is not None:
            return Scoring(self._threshold)
        if model is None:
            raise AssertionError("the embedder named its model's thresholds, or the search was refused")
        return Scoring(model.cosine)

    def _analyse_clip(
        self, path: Path, filename: str, stop: threading.Event
    ) -> tuple[VideoAnalysis, ModelThresholds | None]:
        """The clip's people (a worker thread), and the match thresholds of the model that embedded them."""
        limit = self._video.max_query_seconds
        too_long = f"{filename}: a query clip may last at most {limit:g} s"
        try:
            info = probe(path)
        except VideoDecodeError as error:
            raise NotAVideoError(f"{filename}: not a decodable video: {error}") from error
        if info.duration > limit:
            raise ClipTooLongError(f"{too_long}; this one lasts {info.duration:.1f} s")
        # The container may understate the length: count the samples too (one per 1/sample_fps s).
        max_samples = math.floor(limit * self._video.sample_fps) + 1
        samples = 0
        counting = threading.Lock()  # process_video calls detect from several threads at once
        thresholds: ModelThresholds | None = None

        def detect(frames: list[np.ndarray]) -> list[list[FaceObservation]]:
            nonlocal samples, thresholds
            with counting:
                samples += len(frames)
                too_many = samples > max_samples
            if too_many:
                raise ClipTooLongError(f"{too_long}; this one lasts longer than its header says")
            faces, thresholds = self._frames.embed(frames)
            return faces

        try:
            analysis = analyse_video(path, detect, self._video, JobControl(stop.is_set, _ignore_progress))
        except VideoDecodeError as error:
            raise NotAVideoError(f"{filename}: not a decodable video: {error}") from error
        return analysis, thresholds

    def _rank(
        self,
        queries: list[np.ndarray],
        query: SearchQuery,
        scoring: Scoring,
        excluded: frozenset[int] = frozenset(),
    ) -> list[list[RankedHit]]:
        """Per query face (its vectors as rows: one for a photo's face, a few for a clip's person), up
        to k hits best first, one per photo face or video person; a stored face scores its best
        similarity to any of the query face's vectors. Stored faces in ``excluded`` are no hits.

        With AS-norm the index still retrieves by cosine, over-fetching, and its candidates are
        re-ranked by their normalised scores, which also decide ``match``."""
        k = query.k
        threshold, scorer = scoring.threshold, scoring.scorer
        # Backends answer at most max_k hits per query: the escalation stops there.
        most = self._index.max_k or math.inf
        # The excluded faces are likely among the first answers (a stored query finds itself first).
        if scorer is not None:  # the candidates to re-rank: a pool that does not shrink with k
            first = max(k * _OVERFETCH, _NORMALIZED_POOL)
        else:
            first = k if query.source == "image" else k * _OVERFETCH
        fetch = int(min(first + len(excluded), most))
        vectors = np.concatenate(queries)
        rows = np.cumsum([0] + [len(vectors_of_face) for vectors_of_face in queries])
        index_seconds = 0.0
        # AS-norm: per query face, its cosine to each candidate (the hits' `score`).
        cosines: list[dict[int, float]] = [{} for _ in queries]
        while True:
            started = time.perf_counter()
            answers = self._index.search(vectors, fetch, collection=query.collection, source=query.source)
            index_seconds += time.perf_counter() - started
            per_face = [answers[start:end] for start, end in itertools.pairwise(rows)]
            if scorer is None:
                merged = [
                    [hit for hit in best_of(face_answers, fetch) if hit.face_id not in excluded]
                    for face_answers in per_face
                ]
            else:
                candidates = [
                    {hit.face_id: hit for hits in face_answers for hit in hits if hit.face_id not in excluded}
                    for face_answers in per_face
                ]
                named = {face_id for found in candidates for face_id in found}
                pool = CandidatePool.of(self._faces.vectors(named), scorer) if named else None
                ranked = [
                    normalized_ranking(face, found, pool, scorer) if pool is not None else ([], {})
                    for face, found in zip(queries, candidates, strict=True)
                ]
                merged = [hits for hits, _ in ranked]
                cosines = [face_cosines for _, face_cosines in ranked]
            sources = self._faces.describe([hit.face_id for hits in merged for hit in hits])
            kept = [distinct_hits(hits, sources, k, threshold) for hits in merged]
            # Fewer than `fetch` answers means the index has nothing more to give.
            if fetch >= most or all(
                len(hits) == k or all(len(answer) < fetch for answer in face_answers)
                for hits, face_answers in zip(kept, per_face, strict=True)
            ):
                break
            fetch = int(min(fetch * _OVERFETCH, most))
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
                    face_cosines[hit.face_id] if scorer is not None else hit.score,
                    hit.score >= threshold,
                    hit.score if scorer is not None else None,
                    people[0],
                    *merged_ranges(face, people, vectors_of),
                )
                for hit, people in hits
            ]
            for face, hits, face_cosines in zip(queries, kept, cosines, strict=True)
        ]
