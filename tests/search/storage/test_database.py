"""The database file: numbered migrations, refusing a newer schema, and the store's identity."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from search_service.storage import Storage
from search_service.storage.database import FILE_NAME, MIGRATIONS, SCHEMA_VERSION
from tests.search.fakes import new_image, photo


def test_migrations_are_numbered_from_one() -> None:
    assert [migration.version for migration in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == SCHEMA_VERSION


def test_a_new_store_is_at_the_current_version(data_dir: Path) -> None:
    storage = Storage.open(data_dir)
    assert storage.database.schema_version == SCHEMA_VERSION
    assert len(storage.faces.store_id) == 32
    storage.close()


def test_a_version_1_store_is_migrated(data_dir: Path) -> None:
    """A database written by the first schema, with a video and its unfinished job, reads back
    after migrating: the same store id, the video, its job with the newer columns at their defaults."""
    data_dir.mkdir()
    with sqlite3.connect(data_dir / FILE_NAME) as db:
        db.executescript(MIGRATIONS[0].sql)
        db.executescript(
            "INSERT INTO meta VALUES ('store_id', 'abc');"
            "INSERT INTO media (id, kind, collection, sha256, content_type, size_bytes, created_at) "
            "VALUES (7, 'video', 'old', 'ab12', 'video/mp4', 5, '2024-01-01T00:00:00');"
            "INSERT INTO jobs (id, media_id, state, created_at, updated_at) "
            "VALUES (3, 7, 'running', '2024-01-01T00:00:00', '2024-01-01T00:00:00');"
            "PRAGMA user_version = 1;"
        )
    db.close()
    storage = Storage.open(data_dir)
    try:
        assert storage.database.schema_version == SCHEMA_VERSION
        assert storage.faces.store_id == "abc"
        [video] = storage.videos.find()
        assert (video.id, video.collection, video.people) == (7, "old", [])
        job = storage.jobs.get(3)
        assert job is not None and (job.video_id, job.state, job.timings) == (7, "running", None)
        assert job.attempts == 0  # a column the second migration added, at its default
        assert storage.jobs.requeue_interrupted() == 1  # the migrated job runs again like any other
        claimed = storage.jobs.claim()
        assert claimed is not None and (claimed.id, claimed.attempts) == (3, 1)
        assert storage.faces.collections()[0].name == "old"
    finally:
        storage.close()


def test_reopening_keeps_everything_and_the_store_id(data_dir: Path) -> None:
    first = Storage.open(data_dir)
    [result], _ = first.images.add([new_image(photo("dan"))])
    store_id = first.faces.store_id
    first.close()
    second = Storage.open(data_dir)
    try:
        assert second.faces.store_id == store_id and len(store_id) == 32
        assert second.images.get(result.image.id) == result.image
        assert second.images.file(result.image).read_bytes() == photo("dan")
        assert sum(len(batch) for batch in second.faces.face_batches()) == 1
    finally:
        second.close()


def test_another_store_has_another_id(tmp_path: Path) -> None:
    one, two = Storage.open(tmp_path / "one"), Storage.open(tmp_path / "two")
    assert one.faces.store_id != two.faces.store_id
    one.close()
    two.close()


def test_unknown_schema_version_is_refused(data_dir: Path) -> None:
    Storage.open(data_dir).close()
    with sqlite3.connect(data_dir / FILE_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RuntimeError, match=f"schema version 99; this build reads {SCHEMA_VERSION}"):
        Storage.open(data_dir)


def _others_can_read(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o007)


def test_faces_and_photos_are_the_owners_alone(data_dir: Path) -> None:
    storage = Storage.open(data_dir)
    [stored], _ = storage.images.add([new_image(photo("ida"))])
    photo_file = storage.images.file(stored.image)
    storage.close()
    assert not _others_can_read(data_dir)  # the folder: nothing below it is reachable by others
    assert not _others_can_read(data_dir / FILE_NAME)
    assert not _others_can_read(photo_file)


def test_a_store_made_readable_to_others_is_tightened_at_open(data_dir: Path) -> None:
    Storage.open(data_dir).close()
    (data_dir / FILE_NAME).chmod(0o644)
    Storage.open(data_dir).close()
    assert stat.S_IMODE((data_dir / FILE_NAME).stat().st_mode) == 0o640
