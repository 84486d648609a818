"""How search turns index hits on video people into one hit per video and person, and the answers
for the several vectors of a clip's person into one ranked list."""

from __future__ import annotations

import numpy as np

from search_service.domain import HitSource, PersonVectors
from search_service.index.base import IndexHit
from search_service.services.search import best_of, distinct_hits, merged_ranges

THRESHOLD = 0.91


def video_face(face_id: int, video: int, person: int, ranges: list[tuple[float, float]]) -> HitSource:
    return HitSource(
        face_id=face_id,
        media_id=video,
        source="video",
        external_id=None,
        collection="default",
        box=(0, 0, 10, 10),
        filename=None,
        width=640,
        height=480,
        time_ranges=ranges,
        person=person,
        track_id=face_id,
        time_s=ranges[0][0],
    )


def photo_face(face_id: int, image: int) -> HitSource:
    return HitSource(face_id, image, "image", None, "default", (0, 0, 10, 10), "p.png", 64, 48, None)


SOURCES = {
    1: video_face(1, video=10, person=0, ranges=[(4.0, 8.0)]),  # the same man, close-up...
    2: video_face(2, video=10, person=0, ranges=[(4.0, 8.0)]),  # (a second vector of that track)
    3: video_face(3, video=10, person=1, ranges=[(0.8, 1.6)]),  # ...and the wide shot, kept apart
    4: video_face(4, video=10, person=2, ranges=[(9.0, 10.0)]),  # a passer-by in that video
    5: photo_face(5, image=20),
    6: photo_face(6, image=21),
}


def hits(*pairs: tuple[int, float]) -> list[IndexHit]:
    return [IndexHit(face_id, SOURCES[face_id].media_id, score) for face_id, score in pairs]


def test_people_of_one_video_who_match_join_its_best_hit() -> None:
    ranked = distinct_hits(
        hits((1, 0.97), (5, 0.95), (2, 0.94), (3, 0.93), (4, 0.80), (6, 0.70)), SOURCES, 10, THRESHOLD
    )
    assert [(hit.face_id, [p.person for p in people]) for hit, people in ranked] == [
        (1, [0, 1]),  # the wide shot matches too: one hit for the video
        (5, [None]),
        (4, [2]),  # the passer-by does not match: a hit of its own, as photo faces are
        (6, [None]),
    ]


def test_k_counts_hits_not_people() -> None:
    ranked = distinct_hits(hits((1, 0.97), (5, 0.95), (3, 0.93), (6, 0.92)), SOURCES, 2, THRESHOLD)
    assert [hit.face_id for hit, _ in ranked] == [1, 5]
    assert [p.person for p in ranked[0][1]] == [0, 1]  # joined although the list was already full


def test_non_matching_video_hit_does_not_absorb_later_people() -> None:
    ranked = distinct_hits(hits((1, 0.85), (3, 0.84)), SOURCES, 10, THRESHOLD)
    assert [[p.person for p in people] for _, people in ranked] == [[0], [1]]


def test_merged_ranges_are_sorted_with_a_score_each() -> None:
    query = np.array([1.0, 0.0])
    vectors = {
        (10, 0): PersonVectors(vectors=np.array([[0.97, 0.24]]), track_starts=np.array([4.0])),
        (10, 1): PersonVectors(vectors=np.array([[0.93, 0.37]]), track_starts=np.array([0.8])),
    }
    ranges, scores = merged_ranges(query, [SOURCES[1], SOURCES[3]], vectors)
    assert ranges == [(0.8, 1.6), (4.0, 8.0)]
    assert scores == [0.93, 0.97]


def test_merged_ranges_score_a_query_of_several_vectors_by_its_best() -> None:
    query = np.array([[1.0, 0.0], [0.0, 1.0]])  # a clip's person, seen from two sides
    vectors = {
        (10, 0): PersonVectors(vectors=np.array([[0.6, 0.8]]), track_starts=np.array([4.0])),
        (10, 1): PersonVectors(vectors=np.array([[0.9, 0.1]]), track_starts=np.array([0.8])),
    }
    ranges, scores = merged_ranges(query, [SOURCES[1], SOURCES[3]], vectors)
    assert ranges == [(0.8, 1.6), (4.0, 8.0)]
    assert scores == [0.9, 0.8]


def test_several_answers_become_one_list_of_best_scores() -> None:
    one = hits((1, 0.97), (5, 0.90), (6, 0.80))
    other = hits((5, 0.95), (3, 0.85), (1, 0.70))
    merged = best_of([one, other], fetch=3)
    # Face 4 is in neither answer, yet could score up to 0.80 for the first vector or 0.70 for the
    # second: the list stops at 0.80, above which nothing is missing.
    assert [(hit.face_id, hit.score) for hit in merged] == [(1, 0.97), (5, 0.95), (3, 0.85), (6, 0.80)]
    # An answer shorter than asked for is all there is: it sets no floor.
    assert [hit.face_id for hit in best_of([one[:2], other], fetch=3)] == [1, 5, 3]
    assert [hit.face_id for hit in best_of([one[:2], other[:2]], fetch=3)] == [1, 5, 3]
    assert best_of([one], fetch=3) == one  # a photo's face: its one answer as it is
