"""The SQLite store and its files: round trips, dedupe, and crash safety at every step of a write."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search_service.domain import EmbeddingModel, StagedFile
from search_service.errors import ModelMismatchError
from search_service.store import _SCHEMA_V1, DATABASE_FILE, Store
from search_service.video import Person, StageTimings, Track, VideoAnalysis
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


def _track(index: int, start: float, end: float, vectors: int, thumbnail: bytes = b"jpeg") -> Track:
    embeddings = np.stack([face_vector("vid", bytes([index]), i) for i in range(vectors)])
    return Track(
        index=index,
        start=start,
        end=end,
        faces=vectors + 1,
        best_time=start,
        best_box=(1.0, 2.0, 3.0, 4.0),
        best_quality=1.0,
        best_score=0.98,
        thumbnail_jpeg=thumbnail + bytes([index]),
        representatives=embeddings,
        mean_embedding=embeddings[0],
    )


def _analysis() -> VideoAnalysis:
    """Person 0 twice (1-2.5 s with two vectors, 6-8 s with one), person 1 at 3-4 s."""
    first, other, second = _track(0, 1.0, 2.5, 2), _track(1, 3.0, 4.0, 1), _track(2, 6.0, 8.0, 1)
    people = [Person(0, [(1.0, 2.5), (6.0, 8.0)], [first, second]), Person(1, [(3.0, 4.0)], [other])]
    return VideoAnalysis(12.5, 25.0, 640, 360, 2.0, 25, 9, people, StageTimings(0.1, 0.2, 0.01, 0.4))


def _stage(store: Store, data: bytes) -> StagedFile:
    with store.blobs.staging_file() as file:
        file.write(data)
    digest = hashlib.sha256(data).hexdigest()
    return StagedFile(Path(file.name), "clip.mp4", "video/mp4", len(data), digest)


def test_a_finished_job_stores_people_tracks_and_vectors_at_once(store: Store) -> None:
    submitted = store.add_video(_stage(store, b"video bytes"), "main", "clip.mp4")
    job = store.claim_job()
    assert job is not None and (job.id, job.state, job.attempts) == (submitted.job_id, "running", 1)
    faces = store.finish_video_job(job, _analysis(), {"total": 0.4})
    assert faces is not None and len(faces) == 4 and set(faces.sources) == {"video"}

    video = store.get_video(submitted.video_id)
    assert video is not None and video.job is not None
    assert (video.duration, video.width, video.job.state, video.job.timings) == (
        12.5,
        640,
        "done",
        {"total": 0.4},
    )
    assert [person.time_ranges for person in video.people] == [[(1.0, 2.5), (6.0, 8.0)], [(3.0, 4.0)]]
    late_face = int(faces.face_ids[2])  # the one vector of the 6-8 s track
    hit = store.describe_faces([late_face])[late_face]
    assert (hit.source, hit.media_id, hit.external_id, hit.person) == ("video", video.id, "clip.mp4", 0)
    assert hit.time_ranges == [(1.0, 2.5), (6.0, 8.0)] and hit.time_s == 6.0
    vectors = store.person_vectors([(video.id, 0)])[(video.id, 0)]
    assert list(vectors.track_starts) == [1.0, 1.0, 6.0] and vectors.vectors.shape == (3, 128)
    assert len(stored_files(store.data_dir)) == 4  # the video and three thumbnails

    assert store.delete_media(video.id, "video")
    db = store._db
    for table in ("tracks", "jobs", "people", "faces"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    assert stored_files(store.data_dir) == []


def test_a_cancelled_job_cannot_store_its_result(store: Store) -> None:
    store.add_video(_stage(store, b"video bytes"), "main", None)
    job = store.claim_job()
    assert job is not None
    assert store.set_job_state(job.id, "cancelled", only_from=("queued", "running")) is not None
    assert store.finish_video_job(job, _analysis(), {}) is None
    assert store._db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == 0
    assert len(stored_files(store.data_dir)) == 1  # the video; no thumbnail left behind


def test_interrupted_jobs_are_queued_again(store: Store) -> None:
    first = store.add_video(_stage(store, b"one"), "main", None)
    store.add_video(_stage(store, b"two"), "main", None)
    assert store.claim_job() is not None
    assert store.job_counts() == {"running": 1, "queued": 1}
    assert store.requeue_interrupted() == 1
    job = store.claim_job()
    assert job is not None and (job.id, job.attempts) == (first.job_id, 2)


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE_FILE) as db:
        db.executescript(_SCHEMA_V1 + "INSERT INTO meta VALUES ('store_id', 'abc'); PRAGMA user_version = 1;")
    store = Store.open(tmp_path)
    assert store.store_id == "abc"
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert store.job_counts() == {} and store.list_videos() == []
    store.close()


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
