"""Tracking, face quality, representatives and grouping on hand-made observations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from search_service.domain import FaceObservation, Person
from search_service.video import FaceTracker, TrackerConfig
from search_service.video.tracker import (
    box_iou,
    face_quality,
    frontality,
    merge_ranges,
    select_representatives,
)
from tests.search.video.conftest import identity_embeddings

INTERVAL = 0.5
FRONTAL = np.array([[40, 40], [60, 40], [50, 50], [42, 60], [58, 60]], dtype=np.float32)
PROFILE = np.array([[40, 40], [60, 40], [58, 50], [42, 60], [58, 60]], dtype=np.float32)  # nose by one eye
EMBEDDINGS = identity_embeddings(["A", "B", "C"])


def _textured_frame(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


FRAME = _textured_frame()


def _face(
    identity: str | np.ndarray,
    x: float,
    y: float = 50,
    side: float = 40,
    noise: float = 0.0,
    seed: int = 0,
    landmarks: np.ndarray = FRONTAL,
) -> FaceObservation:
    """A square face at (x, y); ``identity`` names an identity embedding or is the embedding itself."""
    base = EMBEDDINGS[identity] if isinstance(identity, str) else identity
    embedding = base + noise * np.random.default_rng(seed).standard_normal(128) / np.sqrt(128)
    points = landmarks / 100 * side + np.array([x, y], dtype=np.float32)
    return FaceObservation((x, y, x + side, y + side), 0.99, points, embedding / np.linalg.norm(embedding))


def _run(samples: list[list[FaceObservation]], config: TrackerConfig | None = None) -> list[Person]:
    tracker = FaceTracker(INTERVAL, config)
    for number, faces in enumerate(samples):
        tracker.update(number * INTERVAL, faces, FRAME)
    return tracker.finish()


def test_short_gap_keeps_one_track() -> None:
    # A face missed for one and for two samples (max_missed=2), moving a little each time.
    present = [0, 1, 2, 4, 5, 8, 9]
    samples = [[_face("A", 100 + 5 * n, seed=n, noise=0.2)] if n in present else [] for n in range(10)]
    (person,) = _run(samples)
    (track,) = person.tracks
    assert (track.start, track.end, track.faces) == (0.0, 9 * INTERVAL + INTERVAL / 2, 7)
    assert person.time_ranges == [(0.0, 4.75)]


def test_long_gap_closes_the_track_and_grouping_rejoins_it() -> None:
    samples = [[_face("A", 100, seed=n, noise=0.2)] if n < 3 or n >= 7 else [] for n in range(9)]
    (person,) = _run(samples)
    assert [(t.start, t.end) for t in person.tracks] == [(0.0, 1.25), (3.5, 4.25)]
    assert person.time_ranges == [(0.0, 1.25), (3.5, 4.25)]


def test_one_sample_appearance_gets_a_time_range() -> None:
    (person,) = _run([[], [_face("A", 10)], []])
    assert person.time_ranges == [(0.5, 0.75)]


def test_track_end_is_clamped_to_the_duration() -> None:
    tracker = FaceTracker(INTERVAL, duration=1.1)
    for number in range(3):
        tracker.update(number * INTERVAL, [_face("A", 10)], FRAME)
    (person,) = tracker.finish()
    assert person.time_ranges == [(0.0, 1.1)]


def test_two_people_keep_their_tracks_whatever_the_detection_order() -> None:
    samples = []
    for n in range(6):
        faces = [_face("A", 20 + 4 * n, seed=n, noise=0.2), _face("B", 200 - 4 * n, seed=100 + n, noise=0.2)]
        samples.append(faces if n % 2 else faces[::-1])
    people = _run(samples)
    assert len(people) == 2
    for person in people:
        (track,) = person.tracks
        assert track.faces == 6
    by_x = sorted(people, key=lambda p: p.tracks[0].best_box[0])
    assert by_x[0].tracks[0].mean_embedding @ EMBEDDINGS["A"] > 0.99
    assert by_x[1].tracks[0].mean_embedding @ EMBEDDINGS["B"] > 0.99


def test_a_different_person_in_the_same_place_starts_a_new_track() -> None:
    # A cut from one person to another framed the same way: similar boxes, similarity ~0.85.
    samples = [[_face("A", 100, seed=n, noise=0.1)] for n in range(3)]
    samples += [[_face("B", 102, seed=n, noise=0.1)] for n in range(3)]
    people = _run(samples)
    assert [p.time_ranges for p in people] == [[(0.0, 1.25)], [(1.5, 2.75)]]


def test_a_change_of_shot_ends_every_track() -> None:
    # The same face in the same place on both sides of a cut (two scenes of different colours): two
    # tracks, one person, no gap in its time range.
    scenes = [np.full((240, 320, 3), colour, np.uint8) for colour in ((200, 60, 40), (40, 80, 200))]

    def run(cut_correlation: float) -> list[Person]:
        tracker = FaceTracker(INTERVAL, TrackerConfig(scene_cut_correlation=cut_correlation))
        for number in range(6):
            tracker.update(number * INTERVAL, [_face("A", 100, seed=number, noise=0.05)], scenes[number // 3])
        return tracker.finish()

    (person,) = run(TrackerConfig().scene_cut_correlation)
    assert [(t.start, t.end) for t in person.tracks] == [(0.0, 1.25), (1.5, 2.75)]
    assert person.time_ranges == [(0.0, 2.75)]
    (person,) = run(-1.0)  # the check off
    assert len(person.tracks) == 1


def test_a_far_jump_links_only_on_a_very_similar_face() -> None:
    config = TrackerConfig()
    far = [[_face("A", 10, seed=0, noise=0.05)], [_face("A", 250, seed=1, noise=0.05)]]
    assert len(_run(far, config)[0].tracks) == 1
    strict = TrackerConfig(far_link_similarity=0.999, group_similarity=0.999)
    assert len(_run(far, strict)) == 2


def test_tracks_seen_together_are_never_one_person() -> None:
    # Identical embeddings (twins, a mirror, a poster): appearing in one frame proves two people.
    samples = [[_face("A", 10), _face("A", 200)] for _ in range(3)]
    assert len(_run(samples)) == 2


def test_grouping_threshold_is_configurable() -> None:
    samples = [[_face("A", 10)], [], [], [], [_face("B", 10)]]
    assert len(_run(samples)) == 2
    assert len(_run(samples, TrackerConfig(group_similarity=0.80))) == 1


def test_representatives_stay_bounded_however_long_the_track() -> None:
    # A slow random walk in embedding space over 1,000 samples: appearance drifts all along.
    rng = np.random.default_rng(3)
    vector = EMBEDDINGS["A"].astype(np.float64)
    tracker = FaceTracker(INTERVAL)
    for n in range(1000):
        vector = vector + 0.02 * rng.standard_normal(128) / np.sqrt(128)
        vector /= np.linalg.norm(vector)
        tracker.update(n * INTERVAL, [_face(vector.astype(np.float32), 100)], FRAME)
    (person,) = tracker.finish()
    (track,) = person.tracks
    assert track.faces == 1000
    assert track.representatives.shape == (TrackerConfig().max_representatives, 128)
    assert np.linalg.norm(track.mean_embedding) == pytest.approx(1.0, abs=1e-5)


def test_a_static_face_needs_one_representative() -> None:
    embeddings = np.repeat(EMBEDDINGS["A"][None], 50, axis=0)
    assert select_representatives(embeddings, 4, 0.04).shape == (1, 128)


def test_representatives_cover_distinct_appearances() -> None:
    embeddings = np.stack([EMBEDDINGS["A"]] * 10 + [EMBEDDINGS["B"]] * 2 + [EMBEDDINGS["C"]])
    chosen = select_representatives(embeddings, 3, 0.04)
    # The medoid first (the majority look), then the two outlying looks.
    assert np.allclose(chosen[0], EMBEDDINGS["A"])
    assert {tuple(np.round(c, 5)) for c in chosen[1:]} == {
        tuple(np.round(EMBEDDINGS["B"], 5)),
        tuple(np.round(EMBEDDINGS["C"], 5)),
    }


def test_best_face_is_the_sharp_large_frontal_one() -> None:
    blurred = cv2.GaussianBlur(FRAME, (0, 0), 3)
    tracker = FaceTracker(INTERVAL)
    candidates = [
        (blurred, _face("A", 100, side=80)),  # large but blurred
        (FRAME, _face("A", 100, side=40)),  # sharp, frontal, smaller
        (FRAME, _face("A", 100, side=80, landmarks=PROFILE)),
        (FRAME, _face("A", 100, side=80)),  # sharp, frontal, large: the best
        (FRAME, _face("A", 100, side=60)),
    ]
    for n, (image, face) in enumerate(candidates):
        tracker.update(n * INTERVAL, [face], image)
    (person,) = tracker.finish()
    track = person.best_track
    assert track.best_time == 1.5
    assert track.best_box == (100, 50, 180, 130)
    thumbnail = cv2.imdecode(np.frombuffer(track.thumbnail_jpeg, np.uint8), cv2.IMREAD_COLOR)
    # The 80 px box with a 25% margin on each side.
    assert thumbnail is not None and thumbnail.shape[:2] == (120, 120)


def test_thumbnails_are_capped_and_clipped_to_the_frame() -> None:
    tracker = FaceTracker(INTERVAL, TrackerConfig(thumbnail_max_side=64))
    tracker.update(0.0, [_face("A", 250, y=200, side=100)], FRAME)  # runs off the 320x240 frame
    (person,) = tracker.finish()
    thumbnail = cv2.imdecode(np.frombuffer(person.tracks[0].thumbnail_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert thumbnail is not None and max(thumbnail.shape[:2]) == 64


def test_face_quality_scores_size_sharpness_and_pose() -> None:
    face = _face("A", 100, side=60)
    sharp = face_quality(face, FRAME)
    assert face_quality(face, cv2.GaussianBlur(FRAME, (0, 0), 2)) < sharp / 2
    assert face_quality(_face("A", 100, side=30), FRAME) < sharp
    # Boxes are in source pixels; a frame downscaled by 2 crops the same region.
    half = cv2.resize(FRAME, (160, 120), interpolation=cv2.INTER_AREA)
    assert face_quality(face, half, image_scale=0.5) > 0
    # A detector without landmarks: pose is left out rather than guessed.
    unposed = FaceObservation(face.box, face.score, None, face.embedding)
    assert face_quality(unposed, FRAME) == pytest.approx(sharp)


def test_frontality() -> None:
    assert frontality(FRONTAL) == pytest.approx(1.0)
    assert frontality(PROFILE) < 0.6
    assert frontality(FRONTAL * 3 + 7) == pytest.approx(1.0)  # scale-free


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    # Enlarged about their centres, neighbouring boxes overlap: motion between samples.
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10), expand=2.0) == pytest.approx(200 / 600)


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 6), (0, 1), (0.5, 2), (2.5, 3)], max_gap=0.5) == [(0, 3), (5, 6)]
    assert merge_ranges([], max_gap=1) == []
