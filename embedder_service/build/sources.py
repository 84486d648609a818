"""Files the build takes from their publishers, pinned by their sha256.

One mechanism for every such file (YuNet, FaceNet's checkpoint): bytes are refused unless they hash
to the pin, and a download is kept in a cache between builds, written atomically and deleted when
it does not hash to the pin, so a rebuild neither downloads it again nor keeps a truncated or
tampered file. Errors carry what went wrong; each caller words them for its own file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from facesearch_common.files import atomic_writer

DOWNLOAD_TIMEOUT_S = 60


class UnpinnedError(ValueError):
    """Bytes whose sha256 is not the pinned one."""

    def __init__(self, where: Path, got: str, size: int, pinned: str) -> None:
        super().__init__(f"{where} has sha256 {got} ({size:,} bytes), not the pinned {pinned}")
        self.where = where
        self.got = got
        self.size = size
        self.pinned = pinned


class DownloadError(ValueError):
    """A pinned file that could not be downloaded; ``path`` is where a copy would be taken from."""

    def __init__(self, url: str, path: Path, cause: OSError) -> None:
        super().__init__(f"could not download {url}: {cause}")
        self.url = url
        self.path = path
        self.cause = cause


def default_cache_dir() -> Path:
    """Where downloaded files are kept between builds (outside the models folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facesearch"


def verified(data: bytes, sha256: str, where: Path) -> bytes:
    """``data``, when it hashes to ``sha256``; ``where`` names it in the :class:`UnpinnedError`."""
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise UnpinnedError(where, got, len(data), sha256)
    return data


def downloaded(url: str, sha256: str, cache_dir: Path, size: int | None = None) -> bytes:
    """``url``'s verified bytes, downloaded into ``cache_dir`` unless already there.

    ``size``, when known, is only told to the user before a download.
    """
    path = cache_dir / url.rsplit("/", 1)[-1]
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        told = "" if size is None else f"{size / 2**20:.0f} MiB; "
        print(f"downloading {url} ({told}needs internet access)")
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
                atomic_writer(path, "wb") as file,
            ):
                while block := response.read(1 << 20):
                    file.write(block)
        except OSError as error:
            raise DownloadError(url, path, error) from None
    try:
        return verified(path.read_bytes(), sha256, path)
    except UnpinnedError:
        path.unlink()
        raise
