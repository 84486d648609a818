"""Domain records as the API's response models: the one place where the two shapes meet."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from search_service.api.errors import status_of
from search_service.api.schemas import (
    CohortInfo,
    CollectionInfo,
    CollectionList,
    DiskStatus,
    EmbedderStatus,
    FailedImage,
    Health,
    Hit,
    Image,
    ImageList,
    IndexStatus,
    IngestedImage,
    Job,
    JobList,
    Media,
    QueryFace,
    SearchOrigin,
    SearchResponse,
    UploadError,
    Video,
    VideoAccepted,
    VideoList,
    VideoPerson,
    VideoTrack,
)
from search_service.domain import (
    CollectionStats,
    DiskSpace,
    HealthReport,
    HitSource,
    ImageRecord,
    JobRecord,
    PersonRecord,
    RankedHit,
    SearchResult,
    StoredImage,
    SubmittedVideo,
    VideoRecord,
)
from search_service.errors import EmbedderRejectedError
from search_service.settings import MiB


def thumbnail_url(video_id: int, track_id: int) -> str:
    return f"/videos/{video_id}/thumbnails/{track_id}"


def data_url(jpeg: bytes) -> str:
    """A JPEG inline, for faces of a query clip (nothing of it is stored to link to)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def image(record: ImageRecord) -> Image:
    return Image.model_validate(record)


def ingested_image(entry: StoredImage | EmbedderRejectedError) -> IngestedImage | FailedImage:
    if isinstance(entry, EmbedderRejectedError):
        return FailedImage(error=UploadError(status=status_of(entry), detail=entry.detail))
    return IngestedImage.model_validate({**asdict(entry.image), "duplicate": entry.duplicate})


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
        face_id=person.face_id,
    )


def _whereabouts(where: HitSource) -> dict[str, Any]:
    """Which stored face, in which photo or video: the fields a hit and a search's ``query`` share."""
    return {
        "source": where.source,
        "id": where.media_id,
        "face_id": where.face_id,
        "external_id": where.external_id,
        "collection": where.collection,
        "filename": where.filename,
        "width": where.width,
        "height": where.height,
    }


def _hit(ranked: RankedHit) -> Hit:
    where = ranked.where
    return Hit(
        score=ranked.score,
        match=ranked.match,
        normalized_score=ranked.normalized_score,
        **_whereabouts(where),
        box=where.box,
        time_ranges=ranked.time_ranges,
        range_scores=ranked.range_scores,
        best_time=where.time_s,
        person=where.person,
        thumbnail_url=None if where.track_id is None else thumbnail_url(where.media_id, where.track_id),
    )


def search_response(result: SearchResult) -> SearchResponse:
    origin = result.origin
    return SearchResponse(
        threshold=result.threshold,
        score_kind=result.score_kind,
        query=None if origin is None else SearchOrigin(**_whereabouts(origin)),
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


def mib(size: int) -> str:
    """A size for people: ``0.3 MiB``, ``12 MiB``, ``512 MiB``."""
    value = size / MiB
    return f"{value:.1f} MiB" if value < 10 else f"{value:.0f} MiB"


def disk_refusal(space: DiskSpace, incoming: int) -> str:
    """Why an upload is refused before it is read: the disk is below its free-space floor."""
    upload = f", this upload {mib(incoming)}" if incoming else ""
    return (
        f"not enough free disk space to store uploads: {space.free_bytes} bytes free "
        f"({mib(space.free_bytes)}{upload}), {space.min_free_bytes} ({mib(space.min_free_bytes)}) must "
        "stay free (SEARCH_MIN_FREE_BYTES); free space or delete stored media, then retry"
    )


def health(report: HealthReport) -> Health:
    model = report.embedder_model
    disk = report.disk
    problems = []
    if not report.index_ok:
        problems.append("index: cannot serve")
    if model is None:
        problems.append(f"embedder: {report.embedder_problem or 'unreachable'}")
    if disk.low:
        problems.append(f"disk: {mib(disk.free_bytes)} free, floor {mib(disk.min_free_bytes)}")
    return Health(
        status="down" if not report.index_ok else "degraded" if problems else "ok",
        problems=problems,
        index=IndexStatus(
            backend=report.index_backend, ok=report.index_ok, faces=report.faces, details=report.index_details
        ),
        embedder=EmbedderStatus(
            ok=model is not None,
            model=model.name if model else None,
            dimension=model.dimension if model else None,
            match_threshold=None if report.thresholds is None else report.thresholds.cosine,
            normalized_threshold=None if report.thresholds is None else report.thresholds.normalized,
            error=report.embedder_problem,
        ),
        score_cohort=CohortInfo.model_validate(report.cohort),
        disk=DiskStatus(
            ok=not disk.low,
            free_bytes=disk.free_bytes,
            min_free_bytes=disk.min_free_bytes,
            reserve_bytes=disk.reserve_bytes,
        ),
    )


def job(record: JobRecord) -> Job:
    return Job.model_validate(record)


def _next_after(records: Sequence[ImageRecord | VideoRecord | JobRecord], limit: int) -> int | None:
    """The ``after`` of the next page: the last id, when this page is full."""
    return records[-1].id if len(records) == limit else None


def image_list(records: list[ImageRecord], limit: int) -> ImageList:
    return ImageList(images=[image(record) for record in records], next_after=_next_after(records, limit))


def video_list(records: list[VideoRecord], limit: int) -> VideoList:
    return VideoList(videos=[video(record) for record in records], next_after=_next_after(records, limit))


def job_list(records: list[JobRecord], limit: int) -> JobList:
    return JobList(jobs=[job(record) for record in records], next_after=_next_after(records, limit))


def collections(stats: list[CollectionStats]) -> CollectionList:
    return CollectionList(collections=[CollectionInfo.model_validate(entry) for entry in stats])


def video_accepted(submitted: SubmittedVideo) -> VideoAccepted:
    return VideoAccepted(job_id=submitted.job_id, video_id=submitted.video_id, duplicate=submitted.duplicate)
