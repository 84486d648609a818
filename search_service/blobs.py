"""Content-addressed files under the data directory (photos now, videos and thumbnails next).

A file is named by the sha256 of its bytes, so writing the same content twice is a no-op and a
file at its final path is always complete: it is written to a temporary file, fsynced, and only
then renamed into place. The SQLite row naming a file is committed after the file is durable,
so a crash leaves at worst an unreferenced file, which :meth:`BlobStore.sweep` removes at start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Temporary files live beside the final ones so that the rename stays on one filesystem.
        self.temporary = root / "tmp"
        self.temporary.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> Path:
        """Store ``data`` (whose digest the caller computed) durably; returns its path."""
        final = self.path(sha256)
        if final.exists():
            return final
        final.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.temporary, delete=False) as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(file.name, final)
        _fsync_directory(final.parent)
        return final

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def sweep(self, keep: Collection[str]) -> int:
        """Delete temporary files and every stored file whose digest is not in ``keep``."""
        shutil.rmtree(self.temporary, ignore_errors=True)
        self.temporary.mkdir()
        removed = 0
        for shard in self.root.iterdir():
            if shard == self.temporary or not shard.is_dir():
                continue
            for file in shard.iterdir():
                if file.name not in keep:
                    file.unlink()
                    removed += 1
        return removed
