"""The SQLite store and its files: round trips, dedupe, and crash safety at every step of a write."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search_service.domain import EmbeddingModel
from search_service.errors import ModelMismatchError
from search_service.store import DATABASE_FILE, Store
from tests.conftest import REPO_ROOT
from tests.search.fakes import face_vector, new_image, photo


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "data")
    yield opened
    opened.close()


def stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "media").rglob("*") if p.is_file()]


def test_add_get_list_delete_round_trip(store: Store) -> None:
    data = photo("alice", "bob")
    [result], faces = store.add_images([new_image(data, people=("alice", "bob"), external_id="a/1.png")])
    image = result.image
    assert not result.duplicate
    assert (image.external_id, image.collection, image.size_bytes) == ("a/1.png", "main", len(data))
    assert image.metadata == {"source": "test"}
    assert [face.box for face in image.faces] == [(1.0, 2.0, 30.0, 40.0), (2.0, 2.0, 31.0, 40.0)]
    assert list(faces.face_ids) == [face.id for face in image.faces]
    assert list(faces.media_ids) == [image.id, image.id]
    np.testing.assert_allclose(faces.vectors[1], face_vector("bob", data, 1))
    assert store.get_image(image.id) == image
    assert store.blobs.path(image.sha256).read_bytes() == data
    assert store.list_images(sha256=[image.sha256]) == [image]
    assert store.list_images(external_id="a/1.png") == [image]
    assert store.list_images(collection="other") == []
    assert store.delete_media(image.id, "image")
    assert store.get_image(image.id) is None
    assert not store.blobs.path(image.sha256).exists()
    assert not store.delete_media(image.id, "image")


def test_same_photo_is_a_duplicate_within_a_collection_only(store: Store) -> None:
    data = photo("carol")
    [first], _ = store.add_images([new_image(data)])
    [again, twin], faces = store.add_images([new_image(data), new_image(data, collection="other")])
    assert again.duplicate and again.image == first.image
    assert not twin.duplicate and twin.image.id != first.image.id
    assert len(faces) == 1  # only the other collection's copy adds a face
    assert len(stored_files(store.data_dir)) == 1  # one file serves both rows
    store.delete_media(first.image.id, "image")
    assert store.blobs.path(twin.image.sha256).exists()  # still used by the twin


def test_face_batches_yield_every_vector_in_id_order(store: Store) -> None:
    images = [new_image(photo("p", variant=i), people=("p", "q")) for i in range(7)]
    store.add_images(images)
    batches = list(store.face_batches(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 4, 2]
    ids = np.concatenate([b.face_ids for b in batches])
    assert list(ids) == sorted(ids)
    vectors = np.concatenate([b.vectors for b in batches])
    expected = np.stack([face.embedding for image in images for face in image.detected.faces])
    np.testing.assert_array_equal(vectors, expected)
    assert {s for b in batches for s in b.sources} == {"image"}


def test_collections_count_media_and_faces(store: Store) -> None:
    store.add_images([new_image(photo("a", variant=i), people=("a", "b")) for i in range(3)])
    store.add_images([new_image(photo("c"), collection="zoo")])
    stats = {c.name: (c.images, c.videos, c.faces) for c in store.collections()}
    assert stats == {"main": (3, 0, 6), "zoo": (1, 0, 1)}


def test_video_faces_report_their_person_time_ranges(store: Store) -> None:
    """The schema already holds videos: a hit on any track of a person gives all of its ranges."""
    db = store._db
    now = "2026-01-01T00:00:00Z"
    video = db.execute(
        "INSERT INTO media (kind, collection, external_id, sha256, content_type, size_bytes, duration_s, "
        "created_at) VALUES ('video', 'main', 'clip.mp4', 'ff', 'video/mp4', 10, 12.5, ?) RETURNING id",
        (now,),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO jobs (media_id, state, created_at, updated_at) VALUES (?, 'done', ?, ?)",
        (video, now, now),
    )
    tracks = [
        db.execute(
            "INSERT INTO tracks (media_id, person, start_s, end_s, best_time_s, x1, y1, x2, y2) "
            "VALUES (?, ?, ?, ?, ?, 0, 0, 10, 10) RETURNING id",
            (video, person, start, end, start),
        ).fetchone()[0]
        for person, start, end in [(0, 1.0, 2.5), (1, 3.0, 4.0), (0, 6.0, 8.0)]
    ]
    face = db.execute(
        "INSERT INTO faces (media_id, track_id, source, collection, time_s, x1, y1, x2, y2, score, "
        "embedding) VALUES (?, ?, 'video', 'main', 7.0, 1, 2, 3, 4, 0.9, ?) RETURNING id",
        (video, tracks[2], np.zeros(4, "<f4").tobytes()),
    ).fetchone()[0]
    hit = store.describe_faces([face])[face]
    assert (hit.source, hit.media_id, hit.external_id) == ("video", video, "clip.mp4")
    assert hit.time_ranges == [(1.0, 2.5), (6.0, 8.0)]
    assert store.collections()[0].videos == 1
    assert store.delete_media(video, "video")
    assert db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_embedding_model_is_recorded_once_and_enforced(store: Store) -> None:
    assert store.embedding_model() is None
    store.ensure_embedding_model(EmbeddingModel("m1", 128))
    store.ensure_embedding_model(EmbeddingModel("m1", 128))
    assert store.embedding_model() == EmbeddingModel("m1", 128)
    with pytest.raises(ModelMismatchError, match="m1"):
        store.ensure_embedding_model(EmbeddingModel("m2", 512))


def test_reopening_keeps_everything_and_the_store_id(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    [result], _ = first.add_images([new_image(photo("dan"))])
    first.close()
    second = Store.open(tmp_path)
    assert second.store_id == first.store_id and len(second.store_id) == 32
    assert second.get_image(result.image.id) == result.image
    second.close()


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DATABASE_FILE) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        Store(tmp_path)


# A child process that ingests one photo and SIGKILLs itself at a chosen point of the write.
_CRASH = """
import os, signal, sys
from pathlib import Path
from search_service.blobs import BlobStore
from search_service.store import Store
from tests.search.fakes import new_image, photo

point = sys.argv[2]
def die_after(function):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

if point == "temp_file_written":
    os.fsync = die_after(os.fsync)  # the first fsync is the temporary file's, before its rename
elif point == "file_written":
    BlobStore.put = die_after(BlobStore.put)
elif point == "row_inserted":
    Store._insert_image = staticmethod(die_after(Store._insert_image))
store = Store.open(Path(sys.argv[1]))
store.add_images([new_image(photo("eve", variant=1))])
if point == "committed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _crash_while_ingesting(data_dir: Path, point: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CRASH, str(data_dir), point], cwd=REPO_ROOT, capture_output=True, timeout=60
    )
    assert child.returncode == -9, child.stderr.decode()


@pytest.mark.parametrize("point", ["temp_file_written", "file_written", "row_inserted"])
def test_crash_before_commit_leaves_nothing(tmp_path: Path, point: str) -> None:
    data_dir = tmp_path / "data"
    Store.open(data_dir).add_images([new_image(photo("kept"))])
    _crash_while_ingesting(data_dir, point)
    assert len(stored_files(data_dir)) == 2  # the crash left a file (temporary or final) behind
    store = Store.open(data_dir)  # ... which opening sweeps
    assert [image.external_id for image in store.list_images()] == [None]
    assert len(stored_files(data_dir)) == 1
    assert sum(len(batch) for batch in store.face_batches()) == 1
    [retry], _ = store.add_images([new_image(photo("eve", variant=1))])  # the same photo goes in cleanly
    assert not retry.duplicate and store.blobs.path(retry.image.sha256).exists()


def test_crash_after_commit_keeps_the_photo(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _crash_while_ingesting(data_dir, "committed")
    store = Store.open(data_dir)
    [image] = store.list_images()
    assert store.blobs.path(image.sha256).read_bytes() == photo("eve", variant=1)
    assert [len(batch) for batch in store.face_batches()] == [1]
    assert image.metadata == {"source": "test"}
