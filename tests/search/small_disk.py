"""A small disk for the full-disk tests: a tmpfs mounted for one test, filled on demand.

Mounting needs root (or CAP_SYS_ADMIN); elsewhere the tests that use it are skipped, saying why.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MiB = 1024 * 1024


@contextmanager
def small_disk(mount_point: Path, size: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` bytes at ``mount_point``, unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here: the full-disk tests need a small tmpfs")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # Lazily: a file a failed test left open must not keep the mount (and the test run) busy.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


_fillers = itertools.count()


def fill(disk: Path, leave: int = 0) -> Path:
    """Take the disk down to ``leave`` bytes free (a multiple of the page size) with a new file of
    allocated blocks; returns the file, whose removal gives the space back."""
    filler = disk / f"filler-{next(_fillers)}"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, free_bytes(disk) - leave)
    finally:
        os.close(descriptor)
    assert free_bytes(disk) == leave
    return filler
