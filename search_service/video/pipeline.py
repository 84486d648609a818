"""One video in, its people out: sample frames, detect and embed faces in batches, track, group.

No HTTP and no storage here: the caller supplies ``detect_and_embed`` (backed by the embedder
service) and stores the :class:`VideoAnalysis`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import structlog

from search_service.domain import FaceObservation, StageTimings, VideoAnalysis
from search_service.video.decoder import (
    DEFAULT_SAMPLE_FPS,
    SampledFrame,
    VideoDecodeError,
    downscale_factor,
    probe,
    sample_frames,
)
from search_service.video.tracker import FaceTracker, TrackerConfig

log = structlog.get_logger(__name__)

# A batch of RGB frames in, per frame the faces found, in the frames' pixel coordinates.
DetectAndEmbed = Callable[[list[np.ndarray]], list[list[FaceObservation]]]
# (fraction done 0..1, frames processed, faces found so far)
ProgressCallback = Callable[[float, int, int], None]
# A batch handed to detect_and_embed, and its pending result.
_Sent = tuple[list[SampledFrame], Future[list[list[FaceObservation]]]]


class VideoCancelled(Exception):
    """should_cancel answered True; nothing was produced."""


def process_video(
    path: str | os.PathLike[str],
    detect_and_embed: DetectAndEmbed,
    *,
    sample_fps: float = DEFAULT_SAMPLE_FPS,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_size: int = 8,
    batches_in_flight: int = 3,
    max_side: int | None = None,
    tracker_config: TrackerConfig | None = None,
) -> VideoAnalysis:
    """Analyse one video file.

    ``detect_and_embed`` gets up to ``batch_size`` RGB frames at a time and must return one list
    of faces per frame, in order. Up to ``batches_in_flight`` batches are with it at once, each
    call on a thread of its own (so it must be thread-safe), while the next batch decodes; the
    tracker takes their results strictly in frame order, so the analysis does not depend on
    ``batches_in_flight``, and at most ``batches_in_flight x batch_size`` sampled frames are held.
    ``max_side`` downscales frames before detection (longest side in pixels), the main lever on
    detection time; results are mapped back to source pixels. ``should_cancel`` is polled once per
    sampled frame (keep it cheap) and ``progress`` called after every batch, with a fraction that
    never decreases and ends at 1.0.

    Raises :class:`~search_service.video.decoder.VideoDecodeError` for files that are not decodable
    video, :class:`VideoCancelled` on cancellation; errors of ``detect_and_embed`` propagate. Errors
    come as if the batches had run one after another: the first failing batch's error, or a decode
    error or cancellation only when every batch sent before it succeeded. Nothing is left running
    with ``detect_and_embed`` when this returns or raises.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if batches_in_flight < 1:
        raise ValueError(f"batches_in_flight must be at least 1, got {batches_in_flight}")
    if not sample_fps > 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    started = time.perf_counter()
    info = probe(path)
    scale = downscale_factor(info.width, info.height, max_side)
    tracker = FaceTracker(1.0 / sample_fps, tracker_config, image_scale=scale, duration=info.duration)
    # detect: waiting for the embedder's results, i.e. its time not hidden behind decoding.
    decode = detect = tracking = 0.0
    frames_done = faces_seen = 0
    reported = 0.0

    def report(fraction: float) -> None:
        nonlocal reported
        reported = max(reported, min(fraction, 1.0))
        if progress is not None:
            progress(reported, frames_done, faces_seen)

    report(0.0)
    frames: Generator[SampledFrame, None, None] = sample_frames(path, sample_fps, max_side=max_side)
    # Sent to detect_and_embed and not yet tracked, oldest first.
    in_flight: deque[_Sent] = deque()

    def read() -> list[SampledFrame]:
        nonlocal decode
        mark = time.perf_counter()
        try:
            batch = _read_batch(frames, batch_size, should_cancel)
        except (VideoCancelled, VideoDecodeError):
            # As if the batches had run one after another: a batch sent before this one that
            # fails raises its own error instead.
            for _, future in in_flight:
                future.result()
            raise
        decode += time.perf_counter() - mark
        return batch

    def track(sent: _Sent) -> None:
        nonlocal detect, tracking, frames_done, faces_seen
        batch, future = sent
        mark = time.perf_counter()
        found = future.result()
        detect += time.perf_counter() - mark
        if len(found) != len(batch):
            raise ValueError(f"detect_and_embed gave {len(found)} results for {len(batch)} frames")
        mark = time.perf_counter()
        for sampled, faces in zip(batch, found, strict=True):
            tracker.update(sampled.t_seconds, [_to_source(f, scale) for f in faces], sampled.image_rgb)
            faces_seen += len(faces)
        tracking += time.perf_counter() - mark
        frames_done += len(batch)
        # Never 1.0 before the end: the tracks are not summarised yet.
        report(0.99 * batch[-1].t_seconds / info.duration if info.duration > 0 else 0.0)

    # As many threads as batches in flight: a batch is never queued behind another one here.
    with ThreadPoolExecutor(batches_in_flight, thread_name_prefix="video-detect") as pool:
        try:
            while batch := read():
                in_flight.append((batch, pool.submit(detect_and_embed, [f.image_rgb for f in batch])))
                if len(in_flight) == batches_in_flight:
                    track(in_flight.popleft())
                if len(batch) < batch_size:
                    break  # the end of the video: reading on would only poll should_cancel again
            while in_flight:
                track(in_flight.popleft())
        finally:
            # Closes the container at once, also on cancellation or a failing callback; leaving the
            # pool then waits for the batches still in flight, whose results are dropped.
            frames.close()
    mark = time.perf_counter()
    people = tracker.finish()
    tracking += time.perf_counter() - mark
    report(1.0)
    timings = StageTimings(decode, detect, tracking, time.perf_counter() - started)
    log.info(
        "video analysed",
        path=os.fspath(path),
        duration=info.duration,
        frames_sampled=frames_done,
        faces=faces_seen,
        people=len(people),
        batches_in_flight=batches_in_flight,
        **{f"seconds_{k}": round(v, 3) for k, v in dataclasses.asdict(timings).items()},
    )
    return VideoAnalysis(
        duration=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        sample_fps=sample_fps,
        frames_sampled=frames_done,
        faces_seen=faces_seen,
        people=people,
        timings=timings,
    )


def _read_batch(
    frames: Generator[SampledFrame, None, None], size: int, should_cancel: Callable[[], bool] | None
) -> list[SampledFrame]:
    """Up to ``size`` frames; fewer only at the end of the video."""
    batch: list[SampledFrame] = []
    while len(batch) < size:
        if should_cancel is not None and should_cancel():
            raise VideoCancelled("video processing was cancelled")
        frame = next(frames, None)
        if frame is None:
            break
        batch.append(frame)
    return batch


def _to_source(face: FaceObservation, scale: float) -> FaceObservation:
    """Map a face found in a downscaled frame back to source pixels."""
    if scale == 1.0:
        return face
    x1, y1, x2, y2 = face.box
    return dataclasses.replace(
        face,
        box=(x1 / scale, y1 / scale, x2 / scale, y2 / scale),
        landmarks=None if face.landmarks is None else np.asarray(face.landmarks, dtype=np.float64) / scale,
    )
