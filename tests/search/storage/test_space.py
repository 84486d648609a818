"""The store on a full disk (issue 10, row 5): writes are refused whole, deletes and reopening spend
the disk reserve, and the reserve holds real space. On a small tmpfs (see small_disk)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_service.errors import InsufficientStorageError
from search_service.storage import Storage
from search_service.storage.space import RESERVE_FILE, Reserve
from tests.search.fakes import new_image, photo
from tests.search.small_disk import MiB, fill, free_bytes, small_disk
from tests.search.storage.records import face_count, staged_video, stored_files, video_analysis

RESERVE = 2 * MiB
BIG = photo("bob", size=(600, 600))  # random pixels: about 1 MiB of PNG


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", 16 * MiB) as mounted:
        yield mounted


def test_the_reserve_holds_real_blocks(tmp_path: Path) -> None:
    storage = Storage.open(tmp_path / "data", reserve_bytes=RESERVE)
    storage.close()
    reserve = (tmp_path / "data" / RESERVE_FILE).stat()
    assert reserve.st_size == RESERVE
    assert reserve.st_blocks * 512 >= RESERVE  # allocated, not a sparse file's hole


def test_the_reserve_waits_for_room_and_comes_back_with_it(disk: Path) -> None:
    filler = fill(disk, leave=MiB)
    storage = Storage.open(disk / "data", reserve_bytes=RESERVE)  # no room for it: opens all the same
    try:
        assert storage.reserve_held() == 0
        filler.unlink()
        before = free_bytes(disk)
        # No poller: the next delete takes the reserve back, even one that finds nothing.
        assert not storage.images.delete(12345)
        assert storage.reserve_held() == RESERVE
        assert before - free_bytes(disk) >= RESERVE  # the space is really taken
    finally:
        storage.close()


def test_a_photo_refused_on_a_full_disk_leaves_nothing(disk: Path) -> None:
    storage = Storage.open(disk / "data", reserve_bytes=RESERVE)
    try:
        [kept], _ = storage.images.add([new_image(photo("ann"), people=("ann",))])
        fill(disk, leave=64 * 1024)  # room for the rows, none for the photo
        with pytest.raises(InsufficientStorageError, match="the disk is full"):
            storage.images.add([new_image(BIG, people=("bob",))])
        assert [image.id for image in storage.images.find()] == [kept.image.id]
        assert [path.name for path in stored_files(disk / "data")] == [kept.image.sha256]
        assert face_count(storage) == 1
    finally:
        storage.close()


def test_a_video_whose_rows_meet_a_full_disk_leaves_nothing(disk: Path) -> None:
    storage = Storage.open(disk / "data")  # no reserve: nothing to release for it
    try:
        staged = staged_video(storage, b"a video's bytes")
        fill(disk)  # the file is written; moving it into place needs no room, its rows do
        with pytest.raises(InsufficientStorageError):
            storage.videos.add(staged, "main", None)
        assert storage.videos.find() == []
        assert stored_files(disk / "data") == []
    finally:
        storage.close()


def test_a_delete_on_a_full_disk_spends_the_reserve(disk: Path) -> None:
    storage = Storage.open(disk / "data", reserve_bytes=RESERVE)
    try:
        [kept, doomed], _ = storage.images.add(
            [new_image(photo("ann"), people=("ann",)), new_image(BIG, people=("bob",))]
        )
        staged = staged_video(storage, b"a video's bytes")
        video = storage.videos.add(staged, "main", None)
        job = storage.jobs.claim()
        assert job is not None
        storage.videos.store_analysis(job, video_analysis(), {})
        fill(disk)

        assert storage.images.delete(doomed.image.id)  # refused without a reserve (below)
        # Spent, then taken back: the photo's removal left room for it.
        assert storage.reserve_held() == RESERVE
        assert storage.videos.delete(video.video_id)

        assert [image.id for image in storage.images.find()] == [kept.image.id]
        assert storage.videos.find() == []
        assert [path.name for path in stored_files(disk / "data")] == [kept.image.sha256]
        assert face_count(storage) == 1
    finally:
        storage.close()


def test_without_a_reserve_a_delete_on_a_full_disk_is_refused_whole(disk: Path) -> None:
    storage = Storage.open(disk / "data")
    try:
        [image], _ = storage.images.add([new_image(BIG, people=("bob",))])
        fill(disk)
        with pytest.raises(InsufficientStorageError):
            storage.images.delete(image.image.id)
        assert storage.images.get(image.image.id) == image.image
        assert storage.images.file(image.image).read_bytes() == BIG
    finally:
        storage.close()


def test_a_store_reopens_on_a_full_disk_and_serves_reads(disk: Path) -> None:
    storage = Storage.open(disk / "data", reserve_bytes=RESERVE)
    [kept], _ = storage.images.add([new_image(photo("ann"), people=("ann",))])
    storage.close()
    filler = fill(disk)

    reopened = Storage.open(disk / "data", reserve_bytes=RESERVE)  # SQLite needs room for its -shm file
    try:
        assert [image.id for image in reopened.images.find()] == [kept.image.id]
        assert face_count(reopened) == 1
        filler.unlink()
        assert reopened.images.delete(kept.image.id)  # the next delete takes the reserve back
        assert reopened.reserve_held() == RESERVE
    finally:
        reopened.close()


def test_a_delete_that_meets_a_full_disk_is_retried_when_another_released_the_reserve(
    tmp_path: Path,
) -> None:
    # Two deletes at once on a full disk: the first released the reserve; the second fails before
    # that, finds nothing to release, and must still use the room the first one freed.
    reserve = Reserve(tmp_path / RESERVE_FILE, RESERVE)  # not allocated: as if released
    attempts = []

    def delete() -> str:
        attempts.append("delete")
        if len(attempts) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "deleted"

    assert reserve.freeing(delete) == "deleted"
    assert len(attempts) == 2
    assert reserve.held() == RESERVE  # and once it succeeded, the reserve was taken back
