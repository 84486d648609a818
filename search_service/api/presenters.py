"""Domain records as the API's response models: the one place where the two shapes meet."""

from __future__ import annotations

import base64
from dataclasses import asdict

from search_service.api.schemas import (
    CollectionInfo,
    CollectionList,
    EmbedderStatus,
    Health,
    Hit,
    Image,
    IndexStatus,
    IngestedImage,
    Job,
    Media,
    QueryFace,
    SearchResponse,
    Video,
    VideoAccepted,
    VideoPerson,
    VideoTrack,
)
from search_service.domain import (
    CollectionStats,
    HealthReport,
    ImageRecord,
    JobRecord,
    PersonRecord,
    RankedHit,
    SearchResult,
    StoredImage,
    SubmittedVideo,
    VideoRecord,
)


def thumbnail_url(video_id: int, track_id: int) -> str:
    return f"/videos/{video_id}/thumbnails/{track_id}"


def data_url(jpeg: bytes) -> str:
    """A JPEG inline, for faces of a query clip (nothing of it is stored to link to)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def image(record: ImageRecord) -> Image:
    return Image.model_validate(record)


def ingested_image(stored: StoredImage) -> IngestedImage:
    return IngestedImage.model_validate({**asdict(stored.image), "duplicate": stored.duplicate})


def video(record: VideoRecord) -> Video:
    job = record.job
    return Video(
        **Media.model_validate(record).model_dump(),
        duration=record.duration,
        fps=record.fps,
        state=None if job is None else job.state,
        job_id=None if job is None else job.id,
        error=None if job is None else job.error,
        people=[_person(record.id, person) for person in record.people],
    )


def _person(video_id: int, person: PersonRecord) -> VideoPerson:
    tracks = [
        VideoTrack(
            id=track.id,
            start=track.start,
            end=track.end,
            faces=track.faces,
            best_time=track.best_time,
            box=track.box,
            thumbnail_url=thumbnail_url(video_id, track.id) if track.has_thumbnail else None,
        )
        for track in person.tracks
    ]
    best = next((track for track in tracks if track.id == person.thumbnail_track), None)
    return VideoPerson(
        index=person.index,
        time_ranges=person.time_ranges,
        tracks=tracks,
        thumbnail_url=None if best is None else best.thumbnail_url,
    )


def _hit(ranked: RankedHit) -> Hit:
    where = ranked.where
    return Hit(
        score=ranked.score,
        match=ranked.match,
        source=where.source,
        id=where.media_id,
        face_id=where.face_id,
        external_id=where.external_id,
        collection=where.collection,
        box=where.box,
        time_ranges=ranked.time_ranges,
        range_scores=ranked.range_scores,
        best_time=where.time_s,
        person=where.person,
        thumbnail_url=None if where.track_id is None else thumbnail_url(where.media_id, where.track_id),
    )


def search_response(result: SearchResult) -> SearchResponse:
    return SearchResponse(
        threshold=result.threshold,
        faces=[
            QueryFace(
                box=face.box,
                score=face.score,
                hits=[_hit(hit) for hit in face.hits],
                time_ranges=face.time_ranges,
                best_time=face.best_time,
                thumbnail_url=None if face.thumbnail_jpeg is None else data_url(face.thumbnail_jpeg),
            )
            for face in result.faces
        ],
    )


def health(report: HealthReport) -> Health:
    model = report.embedder_model
    return Health(
        status="down" if not report.index_ok else "degraded" if model is None else "ok",
        index=IndexStatus(
            backend=report.index_backend, ok=report.index_ok, faces=report.faces, details=report.index_details
        ),
        embedder=EmbedderStatus(
            ok=model is not None,
            model=model.name if model else None,
            dimension=model.dimension if model else None,
            match_threshold=report.match_threshold,
            error=report.embedder_problem,
        ),
    )


def job(record: JobRecord) -> Job:
    return Job.model_validate(record)


def collections(stats: list[CollectionStats]) -> CollectionList:
    return CollectionList(collections=[CollectionInfo.model_validate(entry) for entry in stats])


def video_accepted(submitted: SubmittedVideo) -> VideoAccepted:
    return VideoAccepted(job_id=submitted.job_id, video_id=submitted.video_id, duplicate=submitted.duplicate)
