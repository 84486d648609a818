"""The durable job queue: claiming in order, conditional transitions, progress, re-queueing."""

from __future__ import annotations

from search_service.storage import Storage
from tests.search.storage.records import staged_video


def test_jobs_are_claimed_oldest_first_until_none_waits(storage: Storage) -> None:
    first = storage.videos.add(staged_video(storage, b"one"), "main", None)
    second = storage.videos.add(staged_video(storage, b"two"), "main", None)
    claimed = [storage.jobs.claim(), storage.jobs.claim()]
    assert [(job.id, job.state, job.attempts) for job in claimed if job is not None] == [
        (first.job_id, "running", 1),
        (second.job_id, "running", 1),
    ]
    assert storage.jobs.claim() is None
    assert storage.jobs.counts() == {"running": 2}


def test_interrupted_jobs_are_queued_again(storage: Storage) -> None:
    first = storage.videos.add(staged_video(storage, b"one"), "main", None)
    storage.videos.add(staged_video(storage, b"two"), "main", None)
    assert storage.jobs.claim() is not None
    assert storage.jobs.counts() == {"running": 1, "queued": 1}
    assert storage.jobs.requeue_interrupted() == 1
    assert storage.jobs.counts() == {"queued": 2}
    job = storage.jobs.claim()
    assert job is not None and (job.id, job.attempts) == (first.job_id, 2)


def test_progress_is_recorded_only_while_running(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"one"), "main", None)
    storage.jobs.report_progress(submitted.job_id, 0.5, 3, 2)  # still queued: ignored
    job = storage.jobs.get(submitted.job_id)
    assert job is not None and (job.progress, job.frames_processed) == (0.0, 0)
    storage.jobs.claim()
    storage.jobs.report_progress(submitted.job_id, 1.5, 4, 3)  # a fraction over 1 is clamped
    job = storage.jobs.get(submitted.job_id)
    assert job is not None and (job.progress, job.frames_processed, job.faces_found) == (1.0, 4, 3)
    storage.jobs.set_state(submitted.job_id, "cancelled", only_from=("running",))
    storage.jobs.report_progress(submitted.job_id, 0.2, 9, 9)
    job = storage.jobs.get(submitted.job_id)
    assert job is not None and (job.state, job.frames_processed) == ("cancelled", 4)


def test_a_transition_happens_only_from_the_states_given(storage: Storage) -> None:
    submitted = storage.videos.add(staged_video(storage, b"one"), "main", None)
    storage.jobs.claim()
    failed = storage.jobs.set_state(submitted.job_id, "failed", only_from=("running",), error="no video")
    assert failed is not None and (failed.state, failed.error) == ("failed", "no video")
    assert failed.finished_at is not None
    # A finished job can no longer be cancelled, nor can an unknown one.
    assert storage.jobs.set_state(submitted.job_id, "cancelled", only_from=("queued", "running")) is None
    assert storage.jobs.set_state(999, "cancelled", only_from=("queued", "running")) is None
    job = storage.jobs.get(submitted.job_id)
    assert job is not None and job.state == "failed"
    assert storage.jobs.get(999) is None
