"""Free space on the data directory's disk, and a reserve of it held back so that deletes commit.

A full disk must not lock the store: deleting is how space is freed through the API, yet SQLite
(WAL) has to append the changed pages before a delete commits, and a store reopened on a full disk
cannot even size its shared-memory file. So the store holds a reserve: a file of allocated blocks
in the data directory (``SEARCH_DISK_RESERVE_BYTES``). When a delete, or opening the store, fails
because the disk is full, the reserve is released and the write tried once more; after each such
write the reserve is allocated again when it is missing and there is room. Any other write that
meets a full disk is refused with ``InsufficientStorageError`` (a 507), leaving nothing half-stored.
Why the sizes: docs/decisions/disk.md.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from prometheus_client import Gauge

from search_service.errors import InsufficientStorageError, says_disk_full

log = structlog.get_logger(__name__)

RESERVE_FILE = "disk-reserve"

FREE_BYTES = Gauge("facesearch_disk_free_bytes", "Bytes still free on the data directory's filesystem")

Result = TypeVar("Result")


def free_bytes(path: Path) -> int:
    """Bytes free on ``path``'s filesystem for ordinary users (the share kept for root left out)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def watch_free_bytes(path: Path) -> None:
    """Have the Prometheus gauge read the free space of ``path``'s filesystem at every scrape."""

    def measure() -> float:
        try:
            return free_bytes(path)
        except OSError:  # the directory is gone (a closed store, removed): nothing to report
            return math.nan

    FREE_BYTES.set_function(measure)


class Reserve:
    """A file of ``size`` allocated bytes, released when a write that frees space needs its room,
    and allocated again after such a write (``freeing``) once there is room."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        # Held from a release to the retry's end: a restore meanwhile (after another thread's
        # delete) would take back the room the retry needs.
        self._lock = threading.RLock()
        self._waiting = False  # for room to allocate it: said once, not after every delete

    def held(self) -> int:
        """Bytes the reserve holds now (0 while released)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def restore(self) -> None:
        """Allocate the reserve (again) when there is room for it; when there is not, log and go on."""
        with self._lock:
            self._allocate()

    def _allocate(self) -> None:
        missing = self.size - self.held()
        if missing <= 0:
            return
        free = free_bytes(self.path.parent)
        if free < missing:
            if not self._waiting:
                log.warning("no room for the disk reserve yet", reserve_bytes=self.size, free_bytes=free)
            self._waiting = True
            return
        existed = self.path.exists()
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                # Real blocks, not a sparse file (a hole holds no space), allocated without writing
                # them: far faster than writing (docs/decisions/disk.md).
                os.posix_fallocate(descriptor, 0, self.size)
            finally:
                os.close(descriptor)
        except OSError as error:
            if not existed:
                self.path.unlink(missing_ok=True)
            log.warning("could not allocate the disk reserve", reserve_bytes=self.size, error=str(error))
            return
        self._waiting = False
        log.info("disk reserve allocated", reserve_bytes=self.size, free_bytes=free - missing)

    def release(self) -> None:
        """Free the reserve's room (when it holds any)."""
        held = self.held()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        log.warning("the disk is full: released the disk reserve", reserve_bytes=held)

    def freeing(self, write: Callable[[], Result]) -> Result:
        """Run ``write``, one that frees space or must not fail for lack of it (a delete, opening the
        store): when the disk is full, release the reserve and run it once more. After it succeeds,
        take the reserve back if it is not held and there is room (a stat when it is held): so a
        store that opened, or spent its reserve, on a full disk regains it at its next delete."""
        try:
            result = write()
        except (OSError, sqlite3.Error, InsufficientStorageError) as error:
            if not (isinstance(error, InsufficientStorageError) or says_disk_full(error)):
                raise
            with self._lock:
                # Retried even when there was nothing to release: a concurrent write may have
                # just released it, or freed space, while this one was failing.
                self.release()
                result = write()
        self.restore()
        return result
