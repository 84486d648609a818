"""process_video end to end on synthetic clips of real face photos, with a template-matching detector."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from search_service.domain import FaceObservation, VideoAnalysis
from search_service.video import (
    DetectAndEmbed,
    TrackerConfig,
    VideoCancelled,
    VideoDecodeError,
    process_video,
    sample_frames,
)
from tests.search.video.conftest import (
    CLIP_SIZE,
    TemplateFaceDetector,
    face_box_at,
    identity_embeddings,
    write_clip,
)


def test_people_tracks_and_time_ranges(a_b_a_clip: Path, detector: TemplateFaceDetector) -> None:
    analysis = process_video(a_b_a_clip, detector, sample_fps=2.0)

    assert (analysis.width, analysis.height) == CLIP_SIZE
    assert (analysis.fps, analysis.duration) == (10, pytest.approx(6.0))
    assert analysis.frames_sampled == 12  # 0, 0.5, ... 5.5 s
    assert analysis.faces_seen == 10  # A 4x, nothing 2x, B 4x, A 2x

    a, b = analysis.people  # numbered by first appearance
    assert a.time_ranges == [(0.0, 1.75), (5.0, 5.75)]
    assert b.time_ranges == [(3.0, 4.75)]
    assert [t.index for t in analysis.tracks] == [0, 1, 2]
    assert [(t.start, t.end) for t in a.tracks] == [(0.0, 1.75), (5.0, 5.75)]

    # A slid right by 2 px per frame from x=40; the best face is one of its real positions.
    first = a.tracks[0]
    assert first.best_time in (0.0, 0.5, 1.0, 1.5)
    expected = face_box_at(40 + first.best_time * 10 * 2, 60)
    assert first.best_box == pytest.approx(expected, abs=1.5)
    assert b.tracks[0].best_box == pytest.approx(face_box_at(280, 80), abs=1.5)
    for track in analysis.tracks:
        thumbnail = cv2.imdecode(np.frombuffer(track.thumbnail_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert thumbnail is not None and min(thumbnail.shape[:2]) >= 60
        assert 1 <= len(track.representatives) <= TrackerConfig().max_representatives
        assert track.representatives.shape[1] == 128

    timings = analysis.timings
    assert min(timings.decode, timings.detect_embed, timings.tracking) > 0
    assert timings.total >= timings.decode + timings.detect_embed + timings.tracking


def test_batches_do_not_change_the_result(a_b_a_clip: Path, face_photos: dict[str, np.ndarray]) -> None:
    results = []
    for batch_size in (1, 5):
        detector = TemplateFaceDetector(face_photos, identity_embeddings(sorted(face_photos)))
        analysis = process_video(a_b_a_clip, detector, sample_fps=2.0, batch_size=batch_size)
        assert max(detector.batches) == batch_size and sum(detector.batches) == 12
        results.append([p.time_ranges for p in analysis.people])
    assert results[0] == results[1]


def test_downscaled_detection_reports_source_pixels(a_b_a_clip: Path, detector: TemplateFaceDetector) -> None:
    analysis = process_video(a_b_a_clip, detector, sample_fps=2.0, max_side=240)
    assert {shape[:2] for shape in detector.frame_shapes} == {(135, 240)}
    assert [p.time_ranges for p in analysis.people] == [[(0.0, 1.75), (5.0, 5.75)], [(3.0, 4.75)]]
    # Found at half size, reported at full size: within the rounding of a 2x downscale.
    assert analysis.people[1].tracks[0].best_box == pytest.approx(face_box_at(280, 80), abs=3)


def test_progress_is_monotonic_from_zero_to_one(a_b_a_clip: Path, detector: TemplateFaceDetector) -> None:
    calls: list[tuple[float, int, int]] = []
    analysis = process_video(
        a_b_a_clip, detector, sample_fps=2.0, batch_size=3, progress=lambda *args: calls.append(args)
    )
    assert calls[0] == (0.0, 0, 0)
    assert calls[-1] == (1.0, analysis.frames_sampled, analysis.faces_seen)
    assert len(calls) == 1 + 12 // 3 + 1
    for before, after in itertools.pairwise(calls):
        assert all(x <= y for x, y in zip(before, after, strict=True)), (before, after)
    assert all(fraction < 1.0 for fraction, _, _ in calls[:-1])
    # By timestamp: after the batch ending at the 1.0 s sample, about a sixth of 6 s is done.
    assert calls[1][0] == pytest.approx(1.0 / 6.0, abs=0.01)


@pytest.mark.parametrize("in_flight", [1, 3])
def test_cancellation_stops_early(a_b_a_clip: Path, detector: TemplateFaceDetector, in_flight: int) -> None:
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return polls > 5

    with pytest.raises(VideoCancelled):
        process_video(
            a_b_a_clip,
            detector,
            sample_fps=2.0,
            batch_size=2,
            batches_in_flight=in_flight,
            should_cancel=should_cancel,
        )
    assert sum(detector.batches) == 4  # two full batches, then the poll before the fifth frame


def test_decode_errors_reach_the_caller_before_detection(
    tmp_path: Path, detector: TemplateFaceDetector
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    with pytest.raises(VideoDecodeError):
        process_video(broken, detector)
    assert detector.batches == []


def test_a_detector_that_drops_frames_is_an_error(a_b_a_clip: Path) -> None:
    def short(frames: list[np.ndarray]) -> list[list[FaceObservation]]:
        return [[] for _ in frames[1:]]

    with pytest.raises(ValueError, match="results for"):
        process_video(a_b_a_clip, short)


@pytest.mark.parametrize(
    ("option", "value"), [("sample_fps", 0.0), ("batch_size", 0), ("batches_in_flight", 0)]
)
def test_invalid_options_are_refused(
    a_b_a_clip: Path, detector: TemplateFaceDetector, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        process_video(a_b_a_clip, detector, **{option: value})  # type: ignore[arg-type]


def test_index_size_does_not_grow_with_frame_count(
    tmp_path: Path, face_photos: dict[str, np.ndarray], detector: TemplateFaceDetector
) -> None:
    # 20 s of one face, sampled 5x per second: 100 observations, one track, a few vectors.
    clip = write_clip(tmp_path / "long.mp4", face_photos, lambda n: [("A", 100 + n % 20, 60)], seconds=20)
    config = TrackerConfig(max_representatives=3, representative_min_distance=0.01)
    analysis = process_video(clip, detector, sample_fps=5.0, tracker_config=config)
    assert analysis.faces_seen == 100
    (person,) = analysis.people
    (track,) = person.tracks
    assert track.faces == 100
    assert len(track.representatives) == 3
    assert person.time_ranges == [(0.0, pytest.approx(19.9))]


class Overlapping:
    """Wraps a detector: records how many calls run at once, and delays call k by
    ``delays[k % len(delays)]`` so that batches sent together can finish in another order."""

    def __init__(self, detect: DetectAndEmbed, delays: Sequence[float] = (0.02,)) -> None:
        self._detect = detect
        self._delays = delays
        self._lock = threading.Lock()
        self._calls = 0
        self.running = 0
        self.most_running = 0

    def __call__(self, frames: list[np.ndarray]) -> list[list[FaceObservation]]:
        with self._lock:
            delay = self._delays[self._calls % len(self._delays)]
            self._calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(delay)
            return self._detect(frames)
        finally:
            with self._lock:
                self.running -= 1


def comparable(analysis: VideoAnalysis) -> list[tuple[object, ...]]:
    """Everything process_video found (not its timings), in a form == can compare."""
    return [
        (
            person.index,
            person.time_ranges,
            [
                tuple(v.tobytes() if isinstance(v, np.ndarray) else v for v in dataclasses.astuple(track))
                for track in person.tracks
            ],
        )
        for person in analysis.people
    ] + [(analysis.frames_sampled, analysis.faces_seen)]


@pytest.fixture(scope="module")
def moving_clip(face_photos: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of A moving 3 px a frame: no two samples (2 per second) alike."""
    path = tmp_path_factory.mktemp("clips") / "moving.mp4"
    return write_clip(path, face_photos, lambda number: [("A", 20 + 3 * number, 60)], seconds=6)


def sample_numbers(clip: Path) -> Callable[[list[np.ndarray]], list[int]]:
    """Which samples (counted from 0 at 2 per second) a batch of frames of ``clip`` holds."""
    samples = [frame.image_rgb.astype(np.int32) for frame in sample_frames(clip, 2.0)]

    def numbers(batch: list[np.ndarray]) -> list[int]:
        return [int(np.argmin([np.abs(sample - frame).sum() for sample in samples])) for frame in batch]

    return numbers


def test_batches_in_flight_do_not_change_the_result(a_b_a_clip: Path, detector: TemplateFaceDetector) -> None:
    analyses, progress_calls = [], []
    for in_flight in (1, 3):
        # The first of every three batches is the slowest: later ones come back before it.
        overlapping = Overlapping(detector, delays=(0.12, 0.06, 0.0))
        calls: list[tuple[float, int, int]] = []
        analysis = process_video(
            a_b_a_clip,
            overlapping,
            sample_fps=2.0,
            batch_size=2,
            batches_in_flight=in_flight,
            progress=lambda *args, calls=calls: calls.append(args),
        )
        assert overlapping.most_running == in_flight
        analyses.append(comparable(analysis))
        progress_calls.append(calls)
    assert analyses[0] == analyses[1]
    assert progress_calls[0] == progress_calls[1]
    assert [p.time_ranges for p in process_video(a_b_a_clip, detector, sample_fps=2.0).people] == [
        [(0.0, 1.75), (5.0, 5.75)],
        [(3.0, 4.75)],
    ]


@pytest.mark.parametrize("in_flight", [1, 2, 4])
def test_frames_held_are_bounded_by_the_batches_in_flight(
    a_b_a_clip: Path, detector: TemplateFaceDetector, in_flight: int
) -> None:
    batch_size = 2
    overlapping = Overlapping(detector, delays=(0.05,))
    decoding = tracked = most_held = 0

    def should_cancel() -> bool:  # polled before each sampled frame is decoded
        nonlocal decoding, most_held
        decoding += 1
        most_held = max(most_held, decoding - tracked)
        return False

    def progress(_: float, frames: int, __: int) -> None:
        nonlocal tracked
        tracked = frames

    process_video(
        a_b_a_clip,
        overlapping,
        sample_fps=2.0,
        batch_size=batch_size,
        batches_in_flight=in_flight,
        should_cancel=should_cancel,
        progress=progress,
    )
    assert overlapping.most_running == in_flight
    # Decoding runs ahead of tracking by at most the batches in flight, the one decoding included.
    assert most_held == in_flight * batch_size


@pytest.mark.parametrize("in_flight", [1, 3])
def test_the_first_failing_batch_in_frame_order_stops_the_video(moving_clip: Path, in_flight: int) -> None:
    numbers_of = sample_numbers(moving_clip)
    sent: list[int] = []

    def failing(batch: list[np.ndarray]) -> list[list[FaceObservation]]:
        numbers = numbers_of(batch)
        sent.extend(numbers)
        if 4 in numbers or 8 in numbers:
            raise RuntimeError(f"failed on samples {numbers}")
        return [[] for _ in batch]

    # Batch 2 (samples 4, 5) is slow; batch 4 (samples 8, 9) fails before it when both are in flight.
    overlapping = Overlapping(failing, delays=(0.0, 0.0, 0.3, 0.0, 0.0))
    calls: list[tuple[float, int, int]] = []
    with pytest.raises(RuntimeError, match=r"samples \[4, 5\]"):
        process_video(
            moving_clip,
            overlapping,
            sample_fps=2.0,
            batch_size=2,
            batches_in_flight=in_flight,
            progress=lambda *args: calls.append(args),
        )
    assert overlapping.running == 0  # nothing is left with the detector
    assert calls[-1][1] == 4  # only the batches before the failing one were tracked
    # Later batches were sent only while the failing one was in flight.
    assert sorted(sent) == list(range(2 * (2 + in_flight)))


@pytest.mark.parametrize("in_flight", [1, 3])
def test_a_batch_failing_before_a_cancellation_wins(moving_clip: Path, in_flight: int) -> None:
    numbers_of = sample_numbers(moving_clip)
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return polls > 5

    def failing(batch: list[np.ndarray]) -> list[list[FaceObservation]]:
        if 2 in numbers_of(batch):
            raise RuntimeError("the second batch failed")
        return [[] for _ in batch]

    # One by one, the second batch fails before the cancellation is polled; so it must with 3 in
    # flight, where the cancellation comes while that batch is still with the detector.
    overlapping = Overlapping(failing, delays=(0.0, 0.2))
    with pytest.raises(RuntimeError, match="second batch"):
        process_video(
            moving_clip,
            overlapping,
            sample_fps=2.0,
            batch_size=2,
            batches_in_flight=in_flight,
            should_cancel=should_cancel,
        )
    assert overlapping.running == 0
