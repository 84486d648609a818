"""Durable file writes: a file at its final path is always complete.

Content is written to a temporary file beside the target (one filesystem, so the rename is
atomic), fsynced, renamed into place, and the directory fsynced so that the rename survives a
power cut too. A crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(staged: Path, final: Path, before_rename: Callable[[], None] | None = None) -> None:
    """Move a complete, closed temporary file into place durably (same filesystem).

    ``before_rename`` runs once the bytes are durable under the temporary name (crash tests).
    """
    with staged.open("rb+") as file:
        os.fsync(file.fileno())
    if before_rename is not None:
        before_rename()
    os.replace(staged, final)
    fsync_directory(final.parent)


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file that replaces it only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(descriptor)  # reopened by name: writers such as onnx.save need the file's name
    staged = Path(name)
    try:
        with staged.open(mode) as handle:
            yield handle
        commit_file(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
