"""Videos: upload, background analysis (frames -> embedder -> tracks -> people), lookup, deletion.

An upload is stored and answered at once with a job; a worker thread then samples frames, sends
them in batches to the embedder through the service's own client (on the event loop), links the
faces into tracks and people, and stores people, tracks, thumbnails and a few vectors per track in
one transaction. Only then do the vectors enter the index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import structlog
from prometheus_client import Counter, Histogram
from starlette.concurrency import run_in_threadpool

from search_service.domain import (
    UNFINISHED_STATES,
    DetectedFace,
    DetectedImage,
    JobRecord,
    StagedFile,
    SubmittedVideo,
    Upload,
    VideoRecord,
)
from search_service.embedder_client import EmbedderClient
from search_service.errors import NotFoundError, ServiceError
from search_service.index.base import FaceIndex
from search_service.services.jobs import JobControl, JobFailed, JobRunner
from search_service.services.model_guard import ModelGuard
from search_service.settings import SearchSettings
from search_service.store import Store
from search_service.video import FaceObservation, VideoAnalysis, VideoDecodeError, process_video

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

# The embedder's default smallest face (pixels), which is also MTCNN's cost driver: its image
# pyramid starts at 12 / min_face_size. A frame of side S is detected as if it were scaled to
# video_detect_side by asking for faces of at least this many pixels times S / video_detect_side.
_MIN_FACE_AT_DETECT_SIDE = 20


class FrameEmbedder:
    """``detect_and_embed`` for :func:`process_video`, called from a worker thread.

    Frames go to the embedder as JPEG through the async client on ``loop``; the result maps to
    tracker observations in the frame's pixels.
    """

    def __init__(
        self,
        embedder: EmbedderClient,
        loop: asyncio.AbstractEventLoop,
        settings: SearchSettings,
        guard: ModelGuard | None = None,
    ) -> None:
        self._embedder = embedder
        self._loop = loop
        self._guard = guard
        self._detect_side = settings.video_detect_side
        self._threshold = settings.video_detection_threshold
        self._jpeg_quality = settings.video_jpeg_quality

    def __call__(self, frames: list[np.ndarray]) -> list[list[FaceObservation]]:
        uploads = [self._upload(number, frame) for number, frame in enumerate(frames)]
        side = max(max(frame.shape[:2]) for frame in frames)
        min_face = max(
            _MIN_FACE_AT_DETECT_SIDE, math.ceil(_MIN_FACE_AT_DETECT_SIDE * side / self._detect_side)
        )
        images = asyncio.run_coroutine_threadsafe(self._detect(uploads, min_face), self._loop).result()
        return [[_observation(face) for face in image.faces] for image in images]

    async def _detect(self, uploads: list[Upload], min_face: int) -> list[DetectedImage]:
        images = await self._embedder.detect(uploads, min_face_size=min_face, threshold=self._threshold)
        if self._guard is not None:
            await self._guard.check(images)
        return images

    def _upload(self, number: int, frame_rgb: np.ndarray) -> Upload:
        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding of a video frame failed")
        data = buffer.tobytes()
        return Upload(f"frame{number}.jpg", data, hashlib.sha256(data).hexdigest(), "image/jpeg")


def _observation(face: DetectedFace) -> FaceObservation:
    landmarks = None if face.landmarks is None else np.asarray(face.landmarks, np.float64)
    return FaceObservation(box=face.box, score=face.score, landmarks=landmarks, embedding=face.embedding)


def analyse_video(
    path: Path, detect: FrameEmbedder, settings: SearchSettings, control: JobControl | None = None
) -> VideoAnalysis:
    """process_video with the service's settings (shared with the benchmark)."""
    return process_video(
        path,
        detect,
        sample_fps=settings.video_sample_fps,
        progress=None if control is None else control.report,
        should_cancel=None if control is None else control.should_stop,
        batch_size=settings.video_batch_frames,
        max_side=settings.video_max_side,
    )


class VideosService:
    def __init__(
        self,
        store: Store,
        index: FaceIndex,
        embedder: EmbedderClient,
        guard: ModelGuard,
        settings: SearchSettings,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._store = store
        self._index = index
        self._settings = settings
        self._frames = FrameEmbedder(embedder, loop, settings, guard)
        # Held from a job's commit until its faces are indexed, and by a delete from its commit until
        # the faces leave the index: otherwise a delete in between would leave the faces indexed.
        self._index_lock = threading.Lock()
        self.jobs = JobRunner(store, self._run_job, settings.video_workers)

    async def submit(self, staged: StagedFile, *, collection: str, external_id: str | None) -> SubmittedVideo:
        submitted = await run_in_threadpool(self._store.add_video, staged, collection, external_id)
        self.jobs.notify()
        log.info(
            "video received",
            video_id=submitted.video_id,
            job_id=submitted.job_id,
            bytes=staged.size_bytes,
            duplicate=submitted.duplicate,
        )
        return submitted

    async def get(self, video_id: int) -> VideoRecord:
        record = await run_in_threadpool(self._store.get_video, video_id)
        if record is None:
            raise NotFoundError(f"no video with id {video_id}")
        return record

    async def find(
        self, *, collection: str | None, external_id: str | None, after: int, limit: int
    ) -> list[VideoRecord]:
        return await run_in_threadpool(
            lambda: self._store.list_videos(
                collection=collection, external_id=external_id, after_id=after, limit=limit
            )
        )

    async def thumbnail(self, video_id: int, track_id: int) -> Path:
        digest = await run_in_threadpool(self._store.thumbnail, video_id, track_id)
        if digest is None:
            raise NotFoundError(f"video {video_id} has no track {track_id} with a thumbnail")
        return self._store.blobs.path(digest)

    async def delete(self, video_id: int) -> None:
        """Remove a video, its file, thumbnails and faces (from search at once); a job in progress
        is cancelled first, so that it cannot store anything afterwards."""
        video = await self.get(video_id)
        if video.job is not None and video.job.state in UNFINISHED_STATES:
            await run_in_threadpool(self.jobs.cancel, video.job.id)
        if not await run_in_threadpool(self._delete, video_id):
            raise NotFoundError(f"no video with id {video_id}")
        self.jobs.refresh_metrics()
        log.info("video deleted", video_id=video_id)

    def _delete(self, video_id: int) -> bool:
        with self._index_lock:
            deleted = self._store.delete_media(video_id, "video")
            self._index.remove_media([video_id])
        return deleted

    async def job(self, job_id: int) -> JobRecord:
        job = await run_in_threadpool(self._store.get_job, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}")
        return job

    async def cancel_job(self, job_id: int) -> JobRecord:
        job = await self.job(job_id)
        cancelled = await run_in_threadpool(self.jobs.cancel, job_id)
        if cancelled is None:
            raise ServiceError(f"job {job_id} has already ended ({job.state}); nothing to cancel", 409)
        return cancelled

    def _run_job(self, job: JobRecord, control: JobControl) -> None:
        """The job handler (a worker thread): analyse the video, then store and index the result."""
        video = self._store.get_video(job.video_id)
        if video is None:  # deleted after the job was claimed
            return
        try:
            analysis = analyse_video(
                self._store.blobs.path(video.sha256), self._frames, self._settings, control
            )
        except VideoDecodeError as error:
            raise JobFailed(f"not a decodable video: {error}") from error
        except ServiceError as error:  # the embedder refused a frame, is unreachable or runs another model
            raise JobFailed(f"embedder: {error.detail} (upload the video again to retry)") from error
        started = time.perf_counter()
        timings = dataclasses.asdict(analysis.timings)
        with self._index_lock:
            faces = self._store.finish_video_job(job, analysis, timings)
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
