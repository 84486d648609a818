"""The video ingest job queue, durable in SQLite so that a restart re-runs interrupted jobs.

A job goes queued -> running -> done | failed | cancelled; every transition is conditional on
the state it leaves, so two actors (a worker finishing, a client cancelling) can never both win.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from search_service.domain import FINISHED_STATES, JobRecord, JobState
from search_service.storage.database import IN_LIST, Database, as_list, now

COLUMNS = (
    "id, media_id, state, progress, frames_processed, faces_found, error, attempts, timings, "
    "created_at, updated_at, started_at, finished_at"
)


def job_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        video_id=row["media_id"],
        state=row["state"],
        progress=row["progress"],
        frames_processed=row["frames_processed"],
        faces_found=row["faces_found"],
        error=row["error"],
        attempts=row["attempts"],
        timings=None if row["timings"] is None else json.loads(row["timings"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def insert_job(db: sqlite3.Connection, video_id: int) -> int:
    """Queue a job for a video, inside the caller's transaction."""
    stamp = now()
    row = db.execute(
        "INSERT INTO jobs (media_id, state, created_at, updated_at) VALUES (?, 'queued', ?, ?) RETURNING id",
        (video_id, stamp, stamp),
    ).fetchone()
    return int(row[0])


class JobRepository:
    def __init__(self, database: Database) -> None:
        self._database = database

    def get(self, job_id: int) -> JobRecord | None:
        rows = self._database.read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return job_record(rows[0]) if rows else None

    def find(
        self,
        *,
        state: JobState | None = None,
        collection: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Jobs in ``state`` of videos in ``collection`` (None: any), by ascending id from
        ``after_id`` (keyset paging)."""
        clauses: list[str] = ["id > ?"]
        parameters: list[object] = [after_id]
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state)
        if collection is not None:
            clauses.append("media_id IN (SELECT id FROM media WHERE collection = ?)")
            parameters.append(collection)
        rows = self._database.read(
            f"SELECT {COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            (*parameters, limit),
        )
        return [job_record(row) for row in rows]

    def claim(self) -> JobRecord | None:
        """Start the oldest queued job (state running, one more attempt); None when none waits."""
        if not self._database.read("SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1"):
            return None  # idle workers poll: a read needs no write lock
        stamp = now()
        with self._database.transaction() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, progress = 0, "
                "frames_processed = 0, faces_found = 0, error = NULL, timings = NULL, started_at = ?, "
                "updated_at = ? "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) "
                f"RETURNING {COLUMNS}",
                (stamp, stamp),
            ).fetchone()
        return None if row is None else job_record(row)

    def report_progress(self, job_id: int, progress: float, frames: int, faces: int) -> None:
        with self._database.transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, frames_processed = ?, faces_found = ?, updated_at = ? "
                "WHERE id = ? AND state = 'running'",
                (min(max(progress, 0.0), 1.0), frames, faces, now(), job_id),
            )

    def set_state(
        self, job_id: int, state: JobState, *, only_from: Sequence[JobState], error: str | None = None
    ) -> JobRecord | None:
        """Move a job to ``state`` if it is in one of ``only_from``; returns it then, else None."""
        stamp = now()
        finished = stamp if state in FINISHED_STATES else None
        with self._database.transaction() as db:
            row = db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ? "
                f"WHERE id = ? AND state {IN_LIST} RETURNING {COLUMNS}",
                (state, error, stamp, finished, job_id, as_list(only_from)),
            ).fetchone()
        return None if row is None else job_record(row)

    def requeue_interrupted(self) -> int:
        """Queue again every job left running by a stopped or crashed process; returns how many."""
        with self._database.transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'running'", (now(),)
            ).rowcount

    def counts(self) -> dict[str, int]:
        return {
            row[0]: row[1] for row in self._database.read("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        }
