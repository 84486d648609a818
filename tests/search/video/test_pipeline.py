"""process_video end to end on synthetic clips of real face photos, with a template-matching detector."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from search_service.domain import FaceObservation
from search_service.video import (
    TrackerConfig,
    VideoCancelled,
    VideoDecodeError,
    process_video,
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


def test_cancellation_stops_early(a_b_a_clip: Path, detector: TemplateFaceDetector) -> None:
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return polls > 5

    with pytest.raises(VideoCancelled):
        process_video(a_b_a_clip, detector, sample_fps=2.0, batch_size=2, should_cancel=should_cancel)
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


@pytest.mark.parametrize(("option", "value"), [("sample_fps", 0.0), ("batch_size", 0)])
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
