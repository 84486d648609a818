"""The store's queries behind the web page: jobs by state and collection, a stored face as a search
query, and the face id that stands for a video person."""

from __future__ import annotations

import numpy as np

from search_service.storage import Storage
from tests.search.storage.records import staged_video, video_analysis


def test_jobs_by_state_and_collection_paged_by_id(storage: Storage) -> None:
    first = storage.videos.add(staged_video(storage, b"one"), "main", None)
    second = storage.videos.add(staged_video(storage, b"two"), "other", None)
    third = storage.videos.add(staged_video(storage, b"three"), "main", None)
    storage.jobs.claim()  # the first one runs
    assert [job.id for job in storage.jobs.find()] == [first.job_id, second.job_id, third.job_id]
    assert [job.id for job in storage.jobs.find(state="queued")] == [second.job_id, third.job_id]
    assert [job.id for job in storage.jobs.find(state="running")] == [first.job_id]
    assert [job.id for job in storage.jobs.find(collection="main")] == [first.job_id, third.job_id]
    assert [job.id for job in storage.jobs.find(state="queued", collection="main")] == [third.job_id]
    assert [job.id for job in storage.jobs.find(after_id=first.job_id, limit=1)] == [second.job_id]
    assert storage.jobs.find(state="done") == []


def test_a_stored_video_face_brings_its_vector_and_its_whole_person(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"clip"), "main", None)
    job = storage.jobs.claim()
    assert job is not None
    analysis = video_analysis()
    faces = storage.videos.store_analysis(job, analysis, {})
    assert faces is not None
    person_0, person_1 = (int(face_id) for face_id in faces.face_ids[[0, 3]])

    stored = storage.faces.stored_face(person_0)
    assert stored is not None
    assert (stored.where.media_id, stored.where.source, stored.where.person) == (
        submitted.video_id,
        "video",
        0,
    )
    assert stored.where.collection == "main" and stored.score == 0.98
    np.testing.assert_array_equal(stored.vector, faces.vectors[0])
    # Person 0 is three vectors over two tracks; person 1's is no part of it.
    assert stored.own_face_ids == frozenset(int(face_id) for face_id in faces.face_ids[:3])
    assert storage.faces.stored_face(999_999) is None

    # Each person stands for itself by the first vector of its clearest track.
    record = storage.videos.get(submitted.video_id)
    assert record is not None
    assert [person.face_id for person in record.people] == [person_0, person_1]
