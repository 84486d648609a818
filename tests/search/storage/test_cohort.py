"""The score cohort in storage: which faces belong to it, their vectors, a version that changes with
every join and leave, deleted media leaving it, the candidates to draw from, and the migration
that adds it to an existing store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from search_service.storage import Storage
from search_service.storage.database import FILE_NAME, MIGRATIONS, SCHEMA_VERSION
from tests.search.fakes import face_vector, new_image, photo
from tests.search.storage.records import staged_video, video_analysis


def store_faces(storage: Storage, photos: int, people: tuple[str, ...] = ("a", "b")) -> list[int]:
    """``photos`` photos of ``people`` each; their face ids, in order."""
    _, faces = storage.images.add(
        [new_image(photo(*people, variant=i), people=people) for i in range(photos)]
    )
    return [int(face_id) for face_id in faces.face_ids]


def drawn(storage: Storage, batch_size: int) -> list[int]:
    return [int(face_id) for ids, _ in storage.cohort.candidates(batch_size) for face_id in ids]


def test_an_empty_store_has_an_empty_cohort(storage: Storage) -> None:
    assert storage.cohort.counts() == (0, 0)
    members = storage.cohort.members()
    assert (len(members.face_ids), len(members.vectors)) == (0, 0)
    assert members.version == storage.cohort.version()
    assert list(storage.cohort.candidates()) == []


def test_faces_join_with_their_vectors(storage: Storage) -> None:
    faces = store_faces(storage, 3)  # six faces
    assert storage.cohort.counts() == (0, 6)
    storage.cohort.add([faces[4], faces[1]])
    assert storage.cohort.counts() == (2, 4)
    members = storage.cohort.members()
    assert list(members.face_ids) == [faces[1], faces[4]]  # by id
    # The stored embeddings: photo 0's second face ("b"), photo 2's first ("a").
    expected = np.stack(
        [face_vector("b", photo("a", "b", variant=0), 1), face_vector("a", photo("a", "b", variant=2), 0)]
    )
    np.testing.assert_array_equal(members.vectors, expected)
    assert members.vectors.dtype == np.float32
    assert members.version == storage.cohort.version()


def test_adding_skips_unknown_faces_and_is_idempotent(storage: Storage) -> None:
    faces = store_faces(storage, 2)
    assert storage.images.delete(storage.images.find()[0].id)  # faces[0] and faces[1] are gone
    storage.cohort.add([faces[0], faces[2], 999_999])
    assert list(storage.cohort.members().face_ids) == [faces[2]]
    version = storage.cohort.version()
    storage.cohort.add([faces[2], faces[2]])
    storage.cohort.add([])
    assert storage.cohort.counts() == (1, 1)
    assert storage.cohort.version() == version  # nobody joined: searches keep their cohort


def test_the_version_changes_whenever_a_face_joins_or_leaves(storage: Storage) -> None:
    faces = store_faces(storage, 3)
    versions = [storage.cohort.version()]
    storage.cohort.add([faces[0]])
    versions.append(storage.cohort.version())
    storage.cohort.add([faces[4], faces[5]])  # both of the third photo's faces
    versions.append(storage.cohort.version())
    assert len(set(versions)) == 3
    # A photo outside the cohort goes: the cohort, and its version, stay.
    first, second, third = sorted(storage.images.find(), key=lambda image: image.id)
    assert storage.images.delete(second.id)
    assert storage.cohort.version() == versions[-1]
    assert storage.cohort.counts() == (3, 1)
    # A photo with a member goes: the member leaves, and the version changes.
    assert storage.images.delete(third.id)
    assert storage.cohort.version() not in versions
    assert list(storage.cohort.members().face_ids) == [faces[0]]
    assert storage.cohort.counts() == (1, 1)
    assert first.id in {image.id for image in storage.images.find()}


def test_a_deleted_photo_takes_its_faces_out_of_the_cohort(storage: Storage) -> None:
    faces = store_faces(storage, 2)
    storage.cohort.add(faces)
    first = min(image.id for image in storage.images.find())
    assert storage.images.delete(first)
    members = storage.cohort.members()
    assert list(members.face_ids) == faces[2:]
    assert len(members.vectors) == 2
    assert storage.cohort.counts() == (2, 0)


def test_a_deleted_video_takes_its_faces_out_of_the_cohort(storage: Storage) -> None:
    photo_faces = store_faces(storage, 1)
    submitted = storage.videos.add(staged_video(storage, b"video bytes"), "main", None)
    job = storage.jobs.claim()
    assert job is not None
    batch = storage.videos.store_analysis(job, video_analysis(), {})
    assert batch is not None
    video_faces = [int(face_id) for face_id in batch.face_ids]
    storage.cohort.add(photo_faces + video_faces)
    assert storage.cohort.counts() == (6, 0)
    version = storage.cohort.version()
    assert storage.videos.delete(submitted.video_id)
    assert list(storage.cohort.members().face_ids) == photo_faces
    assert storage.cohort.counts() == (2, 0)
    assert storage.cohort.version() != version


def test_candidates_are_every_face_outside_the_cohort_once(storage: Storage) -> None:
    faces = store_faces(storage, 5)  # ten faces
    members = [faces[0], faces[3], faces[7]]
    storage.cohort.add(members)
    others = [face for face in faces if face not in members]
    batches = list(storage.cohort.candidates(batch_size=3))
    assert [len(ids) for ids, _ in batches] == [3, 3, 1]
    ids = np.concatenate([ids for ids, _ in batches])
    assert sorted(ids.tolist()) == others  # each once, members never
    vectors = np.concatenate([vectors for _, vectors in batches])
    assert vectors.shape == (7, 128) and vectors.dtype == np.float32
    stored_ids, stored = storage.faces.vectors(others)
    by_id = dict(zip(stored_ids.tolist(), stored, strict=True))
    for face_id, vector in zip(ids.tolist(), vectors, strict=True):
        np.testing.assert_array_equal(vector, by_id[face_id])


def video_faces_by_person(storage: Storage) -> dict[int, set[int]]:
    """A stored video of video_analysis(): its face ids by person (person 0: three, person 1: one)."""
    storage.videos.add(staged_video(storage, b"video bytes"), "main", None)
    job = storage.jobs.claim()
    assert job is not None
    batch = storage.videos.store_analysis(job, video_analysis(), {})
    assert batch is not None
    by_person: dict[int, set[int]] = {}
    for face_id in batch.face_ids.tolist():
        where = storage.faces.describe([face_id])[face_id]
        assert where.person is not None
        by_person.setdefault(where.person, set()).add(face_id)
    return by_person


def test_a_video_person_is_one_candidate_until_one_of_their_faces_is_a_member(storage: Storage) -> None:
    """A person's vectors are one identity: several in the cohort would weigh them several times."""
    photo_faces = set(store_faces(storage, 1))
    people = video_faces_by_person(storage)
    assert [len(people[0]), len(people[1])] == [3, 1]
    for _ in range(10):  # a random one of person 0's faces each time
        ids = set(drawn(storage, batch_size=10))
        assert photo_faces < ids and people[1] < ids and len(ids & people[0]) == 1
    storage.cohort.add([min(people[0])])
    assert set(drawn(storage, batch_size=10)) == photo_faces | people[1]


def test_a_fresh_draw_offers_every_photo_face_and_one_face_per_video_person(storage: Storage) -> None:
    photo_faces = store_faces(storage, 1)
    people = video_faces_by_person(storage)
    storage.cohort.add([photo_faces[0], min(people[0])])  # members are candidates again
    offered = [
        int(face_id) for ids, _ in storage.cohort.candidates(batch_size=2, afresh=True) for face_id in ids
    ]
    assert len(offered) == len(set(offered)) == 4
    assert set(photo_faces) | people[1] < set(offered) and len(set(offered) & people[0]) == 1


def test_candidates_come_in_random_order(storage: Storage) -> None:
    """A draw in id order would fill the cohort from the oldest photos (one collection, one event)."""
    store_faces(storage, 4)
    firsts = {drawn(storage, batch_size=8)[0] for _ in range(30)}
    assert len(firsts) > 1  # all 30 draws starting with one face: odds of 8**-29


def test_a_schema_2_store_gains_an_empty_cohort(data_dir: Path) -> None:
    """A store written before the cohort existed: its faces are all candidates, and members leave
    with their media as in a new store."""
    data_dir.mkdir()
    vectors = [face_vector(name, b"old", 0) for name in ("x", "y")]
    with sqlite3.connect(data_dir / FILE_NAME) as db:
        db.executescript(MIGRATIONS[0].sql)
        db.executescript(MIGRATIONS[1].sql)
        db.executescript(
            "INSERT INTO meta VALUES ('store_id', 'abc');"
            "INSERT INTO media (id, kind, collection, sha256, content_type, size_bytes, created_at) "
            "VALUES (7, 'image', 'old', 'ab12', 'image/png', 5, '2024-01-01T00:00:00');"
            "PRAGMA user_version = 2;"
        )
        db.executemany(
            "INSERT INTO faces (id, media_id, source, collection, x1, y1, x2, y2, score, embedding) "
            "VALUES (?, 7, 'image', 'old', 0, 0, 10, 10, 0.9, ?)",
            [(11, vectors[0].astype("<f4").tobytes()), (12, vectors[1].astype("<f4").tobytes())],
        )
    db.close()
    storage = Storage.open(data_dir)
    try:
        assert storage.database.schema_version == SCHEMA_VERSION
        assert storage.cohort.counts() == (0, 2)
        assert sorted(drawn(storage, batch_size=10)) == [11, 12]
        before = storage.cohort.version()
        storage.cohort.add([12])
        assert storage.cohort.version() != before
        members = storage.cohort.members()
        assert list(members.face_ids) == [12]
        np.testing.assert_array_equal(members.vectors, vectors[1][np.newaxis])
        assert storage.images.delete(7)
        assert storage.cohort.counts() == (0, 0)
    finally:
        storage.close()
