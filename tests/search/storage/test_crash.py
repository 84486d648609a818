"""Crash safety: a process SIGKILLed at each point of a photo's durable write, then the store reopened.

The child (``crash_child``) opens the store with a fault hook that kills it at one named point.
Before the commit, the write must leave nothing that reopening does not sweep, and the same
photo must then go in cleanly; after the commit, the photo is kept with its faces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search_service.storage import Storage
from tests.conftest import REPO_ROOT
from tests.search.fakes import new_image, photo
from tests.search.storage.crash_child import PHOTO
from tests.search.storage.records import digest, face_count, stored_files

KEPT = photo("kept")


def crash_while_ingesting(data_dir: Path, point: str) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.search.storage.crash_child", str(data_dir), point],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -9, f"the child was not killed at {point}: {child.stderr.decode()}"


@pytest.fixture
def data_dir_with_a_photo(tmp_path: Path) -> Path:
    """A store holding one photo (with one face) before the crash."""
    data_dir = tmp_path / "data"
    storage = Storage.open(data_dir)
    storage.images.add([new_image(KEPT, people=("kept",))])
    storage.close()
    return data_dir


@pytest.mark.parametrize(
    ("point", "left_behind"),
    [
        ("blob_staged", "temporary"),  # the bytes written and fsynced under a temporary name
        ("blob_stored", "final"),  # the file at its final path, no row naming it
        ("rows_written", "final"),  # the rows written but never committed
    ],
)
def test_a_crash_before_the_commit_leaves_nothing(
    data_dir_with_a_photo: Path, point: str, left_behind: str
) -> None:
    data_dir = data_dir_with_a_photo
    crash_while_ingesting(data_dir, point)

    # The crash left a file behind: the photo's bytes, under a temporary or its final name.
    debris = [path for path in stored_files(data_dir) if path.name != digest(KEPT)]
    assert [path.read_bytes() for path in debris] == [PHOTO]
    assert (debris[0].name == digest(PHOTO)) == (left_behind == "final")

    storage = Storage.open(data_dir)  # ... which reopening sweeps
    try:
        assert [path.name for path in stored_files(data_dir)] == [digest(KEPT)]
        [kept] = storage.images.find()
        assert kept.sha256 == digest(KEPT)
        assert storage.images.find(sha256=[digest(PHOTO)]) == []
        assert face_count(storage) == 1
        assert storage.faces.collections()[0].images == 1

        [retry], faces = storage.images.add([new_image(PHOTO, people=("eve",))])  # goes in cleanly
        assert not retry.duplicate and len(faces) == 1
        assert storage.images.file(retry.image).read_bytes() == PHOTO
    finally:
        storage.close()


def test_a_crash_after_the_commit_keeps_the_photo_and_its_faces(data_dir_with_a_photo: Path) -> None:
    data_dir = data_dir_with_a_photo
    crash_while_ingesting(data_dir, "committed")
    storage = Storage.open(data_dir)
    try:
        [kept, image] = storage.images.find()
        assert image.sha256 == digest(PHOTO) and kept.sha256 == digest(KEPT)
        assert storage.images.file(image).read_bytes() == PHOTO
        assert len(image.faces) == 1 and image.metadata == {"source": "test"}
        assert face_count(storage) == 2
        assert sorted(path.name for path in stored_files(data_dir)) == sorted([digest(KEPT), digest(PHOTO)])
        [again], faces = storage.images.add([new_image(PHOTO, people=("eve",))])
        assert again.duplicate and again.image == image and len(faces) == 0
    finally:
        storage.close()
