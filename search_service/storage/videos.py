"""Videos: the uploaded file, its ingest jobs, and what analysis found (people, tracks, vectors).

An analysis is stored in one transaction together with its job's "done", and only while that
job is still running: a cancelled job or a deleted video can never gain half a result.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from search_service.domain import (
    FaceBatch,
    JobRecord,
    JobState,
    PersonRecord,
    StagedFile,
    SubmittedVideo,
    TimeRange,
    TrackRecord,
    VideoAnalysis,
    VideoRecord,
)
from search_service.storage.database import IN_LIST, as_list, now
from search_service.storage.jobs import COLUMNS as JOB_COLUMNS
from search_service.storage.jobs import insert_job, job_record
from search_service.storage.media import (
    MEDIA_FIELDS,
    MediaRepository,
    box_of,
    face_batch,
    find_media,
    media_fields,
    unreferenced,
)

_COLUMNS = ", ".join((*MEDIA_FIELDS, "duration_s", "fps"))
_INSERT_FACE = (
    "INSERT INTO faces (media_id, track_id, source, collection, time_s, x1, y1, x2, y2, score, embedding) "
    "VALUES (?, ?, 'video', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
# A person's face id: the first vector of its best track (thumbnail_track), else its first vector.
# Never NULL: every track stores at least one vector, in the person's transaction. Both lookups
# walk the faces_track index.
_PERSON_FACE = (
    "COALESCE((SELECT MIN(id) FROM faces WHERE track_id = p.thumbnail_track), "
    "(SELECT MIN(f.id) FROM tracks t JOIN faces f ON f.track_id = t.id "
    "WHERE t.media_id = p.media_id AND t.person = p.person))"
)
# Uploading a video again whose last job ended like this queues a new job: how a client retries.
_RETRYABLE_STATES: tuple[JobState, ...] = ("failed", "cancelled")


def ms(seconds: float) -> float:
    """Times are stored to the millisecond: finer is noise at a few samples per second."""
    return round(seconds, 3)


def time_ranges(text: str) -> list[TimeRange]:
    return [(float(start), float(end)) for start, end in json.loads(text)]


def _records(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[VideoRecord]:
    ids = as_list([row["id"] for row in rows])
    jobs = {
        job["media_id"]: job_record(job)
        for job in db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN "
            f"(SELECT MAX(id) FROM jobs WHERE media_id {IN_LIST} GROUP BY media_id)",
            (ids,),
        )
    }
    tracks: dict[tuple[int, int], list[TrackRecord]] = {}
    for track in db.execute(
        "SELECT id, media_id, person, start_s, end_s, faces, best_time_s, x1, y1, x2, y2, "
        f"thumbnail_sha256 FROM tracks WHERE media_id {IN_LIST} ORDER BY start_s, id",
        (ids,),
    ):
        tracks.setdefault((track["media_id"], track["person"]), []).append(
            TrackRecord(
                id=track["id"],
                start=track["start_s"],
                end=track["end_s"],
                faces=track["faces"],
                best_time=track["best_time_s"],
                box=box_of(track),
                has_thumbnail=track["thumbnail_sha256"] is not None,
            )
        )
    people: dict[int, list[PersonRecord]] = {}
    for person in db.execute(
        f"SELECT media_id, person, time_ranges, thumbnail_track, {_PERSON_FACE} AS face_id "
        f"FROM people p WHERE media_id {IN_LIST} ORDER BY media_id, person",
        (ids,),
    ):
        key = (person["media_id"], person["person"])
        people.setdefault(key[0], []).append(
            PersonRecord(
                key[1],
                time_ranges(person["time_ranges"]),
                tracks.get(key, []),
                person["thumbnail_track"],
                person["face_id"],
            )
        )
    return [
        VideoRecord(
            **media_fields(row),
            duration=row["duration_s"],
            fps=row["fps"],
            job=jobs.get(row["id"]),
            people=people.get(row["id"], []),
        )
        for row in rows
    ]


class VideoRepository(MediaRepository[VideoRecord]):
    kind = "video"
    columns = _COLUMNS
    records = staticmethod(_records)

    def staging_file(self) -> IO[bytes]:
        """A temporary file under the data directory to stream an upload into (see :meth:`add`)."""
        return self._blobs.staging_file()

    def add(self, staged: StagedFile, collection: str, external_id: str | None) -> SubmittedVideo:
        """Store an uploaded video and queue its ingest job, in one transaction.

        The same bytes already in the collection are not stored twice: that video comes back, with
        a new job when its last one failed or was cancelled (uploading again is how to retry).
        """
        with self._database.lock, self._blobs.writing([staged.sha256]):
            # The file is durable before the row naming it, as for photos (see Database).
            self._blobs.put_file(staged.sha256, staged.path)
            with self._database.transaction() as db:
                existing = find_media(db, "video", "id", sha256=[staged.sha256], collection=collection)
                if not existing:
                    video_id = db.execute(
                        "INSERT INTO media (kind, collection, external_id, sha256, filename, content_type, "
                        "size_bytes, created_at) VALUES ('video', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (
                            collection,
                            external_id,
                            staged.sha256,
                            staged.filename,
                            staged.content_type,
                            staged.size_bytes,
                            now(),
                        ),
                    ).fetchone()[0]
                    return SubmittedVideo(video_id, insert_job(db, video_id), duplicate=False)
                video_id = existing[0]["id"]
                last = db.execute(
                    "SELECT id, state FROM jobs WHERE media_id = ? ORDER BY id DESC LIMIT 1", (video_id,)
                ).fetchone()
                if last is not None and last["state"] not in _RETRYABLE_STATES:
                    return SubmittedVideo(video_id, last["id"], duplicate=True)
                return SubmittedVideo(video_id, insert_job(db, video_id), duplicate=True)

    def thumbnail(self, video_id: int, track_id: int) -> Path | None:
        """A track's thumbnail file; None when the video has no such track or the track no thumbnail."""
        rows = self._database.read(
            "SELECT thumbnail_sha256 FROM tracks WHERE id = ? AND media_id = ?", (track_id, video_id)
        )
        return self._blobs.path(rows[0][0]) if rows and rows[0][0] is not None else None

    def store_analysis(
        self, job: JobRecord, analysis: VideoAnalysis, timings: dict[str, float]
    ) -> FaceBatch | None:
        """Store a job's result (people, tracks, thumbnails, vectors) and mark it done, atomically.

        Returns the new faces for the index, or None when the job stopped running meanwhile
        (cancelled, or its video deleted): then nothing of it is stored.
        """
        thumbnails = {
            hashlib.sha256(track.thumbnail_jpeg).hexdigest(): track.thumbnail_jpeg
            for track in analysis.tracks
            if track.thumbnail_jpeg
        }
        with self._database.lock, self._blobs.writing(thumbnails):
            for digest, data in thumbnails.items():
                self._blobs.put(digest, data)
            with self._database.transaction() as db:
                media = db.execute(
                    "SELECT m.collection FROM jobs j JOIN media m ON m.id = j.media_id "
                    "WHERE j.id = ? AND j.state = 'running'",
                    (job.id,),
                ).fetchone()
                if media is not None:
                    batch = self._insert_analysis(db, job.video_id, media["collection"], analysis)
                    stamp = now()
                    db.execute(
                        "UPDATE media SET width = ?, height = ?, duration_s = ?, fps = ? WHERE id = ?",
                        (analysis.width, analysis.height, ms(analysis.duration), analysis.fps, job.video_id),
                    )
                    db.execute(
                        "UPDATE jobs SET state = 'done', progress = 1, frames_processed = ?, "
                        "faces_found = ?, timings = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                        (
                            analysis.frames_sampled,
                            analysis.faces_seen,
                            json.dumps(timings),
                            stamp,
                            stamp,
                            job.id,
                        ),
                    )
                    return batch
                unused = unreferenced(db, thumbnails)
            for digest in unused:
                self._blobs.remove(digest)
            return None

    @staticmethod
    def _insert_analysis(
        db: sqlite3.Connection, video_id: int, collection: str, analysis: VideoAnalysis
    ) -> FaceBatch:
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for person in analysis.people:
            track_ids: dict[int, int] = {}
            for track in person.tracks:
                thumbnail = hashlib.sha256(track.thumbnail_jpeg).hexdigest() if track.thumbnail_jpeg else None
                start, end, best_time = ms(track.start), ms(track.end), ms(track.best_time)
                track_ids[track.index] = track_id = db.execute(
                    "INSERT INTO tracks (media_id, person, start_s, end_s, best_time_s, thumbnail_sha256, "
                    "x1, y1, x2, y2, faces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (video_id, person.index, start, end, best_time, thumbnail, *track.best_box, track.faces),
                ).fetchone()[0]
                # The tracker keeps no frame per representative: each points at its track's best
                # face, which is the moment a client should jump to anyway.
                for vector in track.representatives:
                    row = (video_id, track_id, collection, best_time, *track.best_box, track.best_score,
                           np.asarray(vector, "<f4").tobytes())  # fmt: skip
                    ids.append(db.execute(_INSERT_FACE, row).fetchone()[0])
                vectors.extend(track.representatives)
            db.execute(
                "INSERT INTO people (media_id, person, time_ranges, thumbnail_track) VALUES (?, ?, ?, ?)",
                (
                    video_id,
                    person.index,
                    json.dumps([(ms(start), ms(end)) for start, end in person.time_ranges]),
                    track_ids[person.best_track.index],
                ),
            )
        return face_batch(ids, [video_id] * len(ids), "video", [collection] * len(ids), vectors)
