"""Videos: upload, background analysis (frames -> embedder -> tracks -> people), lookup, deletion.

An upload is probed first (its container read, its first frame decoded): what is no video is
refused and nothing kept. A video is stored and answered at once with a job; a worker thread then
samples frames, sends them in batches to the embedder through the service's own client (on the
event loop; a few batches in flight, so that the embedder never waits for the decoder), links the
faces into tracks and people, and stores people, tracks, thumbnails and a few vectors per track in
one transaction. Only then do the vectors enter the index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import IO

import structlog
from prometheus_client import Counter, Histogram

from search_service.domain import (
    UNFINISHED_STATES,
    JobRecord,
    JobState,
    StagedFile,
    SubmittedVideo,
    VideoAnalysis,
    VideoRecord,
)
from search_service.errors import (
    ConflictError,
    InsufficientStorageError,
    NotAVideoError,
    NotFoundError,
    ServiceError,
)
from search_service.index.base import FaceIndex
from search_service.services.frames import FrameEmbedder
from search_service.services.jobs import JobControl, JobFailed, JobRunner
from search_service.services.lookup import found
from search_service.settings import VideoSettings
from search_service.storage.jobs import JobRepository
from search_service.storage.videos import VideoRepository
from search_service.video import DetectAndEmbed, VideoDecodeError, probe, process_video

log = structlog.get_logger(__name__)

VIDEO_SECONDS = Counter("facesearch_video_seconds_processed_total", "Seconds of video analysed and indexed")
STAGE_SECONDS = Counter(
    "facesearch_video_stage_seconds_total", "Wall seconds spent per stage of video ingest", ["stage"]
)
SPEED = Histogram(
    "facesearch_video_speed_ratio",
    "Seconds of video processed per wall second, per finished job (2 = twice real time)",
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 16, 32),
)


def analyse_video(
    path: Path, detect: DetectAndEmbed, settings: VideoSettings, control: JobControl | None = None
) -> VideoAnalysis:
    """process_video with the service's settings (shared with the benchmark and search by clip)."""
    return process_video(
        path,
        detect,
        sample_fps=settings.sample_fps,
        progress=None if control is None else control.report,
        should_cancel=None if control is None else control.should_stop,
        batch_size=settings.batch_frames,
        batches_in_flight=settings.batches_in_flight,
        max_side=settings.max_side,
    )


class VideosService:
    def __init__(
        self,
        videos: VideoRepository,
        jobs: JobRepository,
        index: FaceIndex,
        frames: FrameEmbedder,
        settings: VideoSettings,
    ) -> None:
        self._videos = videos
        self._jobs = jobs
        self._index = index
        self._frames = frames
        self._settings = settings
        # Held from a job's commit until its faces are indexed, and by a delete from its commit until
        # the faces leave the index: otherwise a delete in between would leave the faces indexed.
        self._index_lock = threading.Lock()
        self.runner = JobRunner(jobs, self._run_job, settings.workers)

    def staging_file(self) -> IO[bytes]:
        """A temporary file under the data directory to stream an upload into, for :meth:`submit`."""
        return self._videos.staging_file()

    async def submit(self, staged: StagedFile, *, collection: str, external_id: str | None) -> SubmittedVideo:
        """Store the staged upload and queue its analysis. Raises NotAVideoError, storing nothing,
        for a file whose container does not open or whose first video frame does not decode (the
        caller still owns, and removes, the staging file)."""
        try:
            await asyncio.to_thread(probe, staged.path)
        except VideoDecodeError as error:
            log.info("video refused", filename=staged.filename, bytes=staged.size_bytes, reason=str(error))
            raise NotAVideoError(f"{staged.filename}: not a decodable video: {error}") from error
        submitted = await asyncio.to_thread(self._videos.add, staged, collection, external_id)
        self.runner.notify()
        log.info(
            "video received",
            video_id=submitted.video_id,
            job_id=submitted.job_id,
            bytes=staged.size_bytes,
            duplicate=submitted.duplicate,
        )
        return submitted

    async def get(self, video_id: int) -> VideoRecord:
        return found(await asyncio.to_thread(self._videos.get, video_id), f"no video with id {video_id}")

    async def find(
        self, *, collection: str | None, external_id: str | None, after: int, limit: int
    ) -> list[VideoRecord]:
        return await asyncio.to_thread(
            self._videos.find, collection=collection, external_id=external_id, after_id=after, limit=limit
        )

    async def file(self, video_id: int) -> tuple[Path, str]:
        """The stored video's path and content type."""
        record = await self.get(video_id)
        return self._videos.file(record), record.content_type

    async def thumbnail(self, video_id: int, track_id: int) -> Path:
        return found(
            await asyncio.to_thread(self._videos.thumbnail, video_id, track_id),
            f"video {video_id} has no track {track_id} with a thumbnail",
        )

    async def delete(self, video_id: int) -> None:
        """Remove a video, its file, thumbnails and faces (from search at once); a job in progress
        is cancelled first, so that it cannot store anything afterwards."""
        video = await self.get(video_id)
        if video.job is not None and video.job.state in UNFINISHED_STATES:
            await asyncio.to_thread(self.runner.cancel, video.job.id)
        if not await asyncio.to_thread(self._delete, video_id):
            raise NotFoundError(f"no video with id {video_id}")
        self.runner.refresh_metrics()
        log.info("video deleted", video_id=video_id)

    def _delete(self, video_id: int) -> bool:
        with self._index_lock:
            deleted = self._videos.delete(video_id)
            self._index.remove_media([video_id])
        return deleted

    async def job(self, job_id: int) -> JobRecord:
        return found(await asyncio.to_thread(self._jobs.get, job_id), f"no job with id {job_id}")

    async def find_jobs(
        self, *, state: JobState | None, collection: str | None, after: int, limit: int
    ) -> list[JobRecord]:
        return await asyncio.to_thread(
            self._jobs.find, state=state, collection=collection, after_id=after, limit=limit
        )

    async def cancel_job(self, job_id: int) -> JobRecord:
        job = await self.job(job_id)
        cancelled = await asyncio.to_thread(self.runner.cancel, job_id)
        if cancelled is None:
            raise ConflictError(f"job {job_id} has already ended ({job.state}); nothing to cancel")
        return cancelled

    def _run_job(self, job: JobRecord, control: JobControl) -> None:
        """The job handler (a worker thread): analyse the video, then store and index the result."""
        video = self._videos.get(job.video_id)
        if video is None:  # deleted after the job was claimed
            return
        try:
            analysis = analyse_video(self._videos.file(video), self._frames, self._settings, control)
        except VideoDecodeError as error:
            raise JobFailed(f"not a decodable video: {error}") from error
        except InsufficientStorageError as error:  # its progress could not be recorded
            raise JobFailed(f"{error.detail} (upload the video again to retry)") from error
        except ServiceError as error:  # the embedder refused a frame, is unreachable or runs another model
            raise JobFailed(f"embedder: {error.detail} (upload the video again to retry)") from error
        started = time.perf_counter()
        timings = dataclasses.asdict(analysis.timings)
        with self._index_lock:
            try:
                faces = self._videos.store_analysis(job, analysis, timings)
            except InsufficientStorageError as error:
                raise JobFailed(f"{error.detail} (upload the video again to retry)") from error
            if faces is not None:
                self._index.add(faces)
        if faces is None:
            log.info("video job result discarded: cancelled or deleted meanwhile", job_id=job.id)
            return
        timings["store_index"] = time.perf_counter() - started
        _observe(analysis, timings)
        log.info(
            "video indexed",
            job_id=job.id,
            video_id=job.video_id,
            people=len(analysis.people),
            tracks=len(analysis.tracks),
            vectors=len(faces),
            speed=round(analysis.duration / max(timings["total"], 1e-9), 2),
        )


def _observe(analysis: VideoAnalysis, timings: dict[str, float]) -> None:
    VIDEO_SECONDS.inc(analysis.duration)
    for stage in ("decode", "detect_embed", "tracking", "store_index"):
        STAGE_SECONDS.labels(stage).inc(timings[stage])
    if timings["total"] > 0:
        SPEED.observe(analysis.duration / timings["total"])
