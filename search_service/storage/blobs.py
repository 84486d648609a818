"""Content-addressed files under the data directory: photos, videos and face thumbnails.

A file is named by the sha256 of its bytes, so writing the same content twice is a no-op and a
file at its final path is always complete (facesearch_common.files writes it durably). The row
naming a file is committed after the file is durable, so a crash leaves at worst an unreferenced
file, which :meth:`BlobStore.sweep` removes at start. A write that fails (a full disk: then
InsufficientStorageError) removes what it had written (:meth:`BlobStore.writing`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from facesearch_common.files import commit_file
from search_service.errors import refused_when_full
from search_service.storage.faults import FaultHook, no_faults


class BlobStore:
    def __init__(self, root: Path, faults: FaultHook = no_faults) -> None:
        self.root = root
        self._faults = faults
        # Temporary files live beside the final ones so that the rename stays on one filesystem.
        self.temporary = root / "tmp"
        self.temporary.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> Path:
        """Store ``data`` (whose digest the caller computed) durably; returns its path."""
        if self.path(sha256).exists():
            return self.path(sha256)
        file = self.staging_file()
        try:
            with refused_when_full("the file"), file:
                file.write(data)
        except BaseException:
            Path(file.name).unlink(missing_ok=True)
            raise
        return self.put_file(sha256, Path(file.name))

    def staging_file(self) -> IO[bytes]:
        """A new temporary file to write an upload into, then hand to :meth:`put_file`.

        It is not deleted on close: a failed upload must unlink it (or the next sweep does).
        """
        with refused_when_full("the upload"):
            return tempfile.NamedTemporaryFile(dir=self.temporary, delete=False)

    def put_file(self, sha256: str, staged: Path) -> Path:
        """Move a complete temporary file (see :meth:`staging_file`) into place durably; the
        temporary file is gone afterwards, also when this fails."""
        final = self.path(sha256)
        try:
            if final.exists():
                return final
            with refused_when_full("the file"):
                final.parent.mkdir(exist_ok=True)
                commit_file(staged, final, before_rename=lambda: self._faults("blob_staged"))
        finally:
            staged.unlink(missing_ok=True)
        self._faults("blob_stored")
        return final

    @contextmanager
    def writing(self, digests: Iterable[str]) -> Iterator[None]:
        """Around a write that stores these files and then the rows naming them (under the
        database lock): when it fails, the files it added are removed again. None of them existed
        before, so no committed row names them."""
        new = {digest for digest in digests if not self.path(digest).exists()}
        try:
            yield
        except BaseException:
            for digest in new:
                self.remove(digest)
            raise

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
