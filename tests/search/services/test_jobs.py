"""The job runner over a real store: a worker outlives a store that fails under it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from search_service.domain import JobRecord
from search_service.services.jobs import JobControl, JobRunner
from search_service.storage import Storage
from search_service.storage.jobs import JobRepository
from tests.search.storage.records import staged_video


class FullDiskOnce(JobRepository):
    """A job table whose first claim meets a full disk, as SQLite reports it."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage.database)
        self.failed = False

    def claim(self) -> JobRecord | None:
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return super().claim()


def test_a_worker_whose_store_fails_keeps_running_the_queue(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path / "data")
    submitted = storage.videos.add(staged_video(storage, b"clip"), "default", None)
    ran = threading.Event()

    def handler(job: JobRecord, control: JobControl) -> None:
        assert job.id == submitted.job_id
        ran.set()

    runner = JobRunner(FullDiskOnce(storage), handler, store_retry_s=0.05)
    runner.start()
    try:
        assert ran.wait(10), "the worker died with the store's first failure"
    finally:
        runner.stop()
        storage.close()
