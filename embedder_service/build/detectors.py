"""The optional detectors' ONNX files (``make models DETECTORS=yunet,scrfd``), from their publishers.

Neither is in a package registry as a model: YuNet is downloaded from its publisher's
repository, once (kept in the build's cache, ``embedder_service.build.sources``); SCRFD is the
``models/scrfd.onnx`` inside the PyPI source archive ``scrfd==0.3.0``.
Each file is pinned by its sha256: a download or local file that differs is refused.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from embedder_service.build.sources import (
    DownloadError,
    UnpinnedError,
    default_cache_dir,
    downloaded,
    verified,
)
from embedder_service.models.scrfd import LICENCE as SCRFD_LICENCE


class SourceError(ValueError):
    """A detector file that is not the pinned one, or cannot be fetched."""


@dataclass(frozen=True)
class DetectorSource:
    name: str
    file: str  # its name in the models directory
    sha256: str
    package: str  # where it comes from, as the manifest states it
    version: str
    source_file: str
    licence: str
    url: str | None = None  # None: it must be given as a local file


# The nano model with a dynamic input size (WIDER FACE val AP 0.892 / 0.883 / 0.811). The commit
# is the publisher's; the file's sha256 is the one that counts.
YUNET = DetectorSource(
    name="yunet",
    file="yunet_n_dynamic.onnx",
    sha256="104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
    package="ShiqiYu/libfacedetection.train",
    version="dca340aa082c71081a68d17db8e58b33a58a914b",
    source_file="onnx/yunet_n_dynamic.onnx",
    licence="Apache-2.0 (libfacedetection.train)",
    url=(
        "https://github.com/ShiqiYu/libfacedetection.train/raw/"
        "dca340aa082c71081a68d17db8e58b33a58a914b/onnx/yunet_n_dynamic.onnx"
    ),
)
# SCRFD-2.5G-KPS; the archive comes from `pip download scrfd==0.3.0 --no-deps --no-binary :all:`.
SCRFD = DetectorSource(
    name="scrfd",
    file="scrfd_2.5g_kps.onnx",
    sha256="9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30",
    package="scrfd",
    version="0.3.0",
    source_file="scrfd-0.3.0/models/scrfd.onnx",
    licence=SCRFD_LICENCE,
)
SOURCES = {source.name: source for source in (YUNET, SCRFD)}


def fetch(source: DetectorSource, local: Path | None, cache_dir: Path | None = None) -> bytes:
    """The detector's ONNX bytes, checked against the pinned sha256.

    ``local`` is the file itself, or for SCRFD also the sdist holding it; without it, YuNet is
    downloaded from its publisher into ``cache_dir`` (by default the build's cache) once.
    """
    try:
        if local is not None:
            data = (
                _from_archive(local, source.source_file) if tarfile.is_tarfile(local) else local.read_bytes()
            )
            return verified(data, source.sha256, local)
        if source.url is None:
            raise SourceError(
                f"{source.name} needs a local file: the sdist of {source.package}=={source.version} or"
                f" its {source.source_file}"
            )
        return downloaded(source.url, source.sha256, cache_dir or default_cache_dir())
    except UnpinnedError as error:
        raise SourceError(
            f"{source.name}: the file's sha256 is {error.got}, not the pinned {source.sha256}"
            f" ({source.package} {source.version}, {source.source_file}): refused"
        ) from None
    except DownloadError as error:
        raise SourceError(
            f"cannot download {source.name} from {error.url} ({error.cause}); give a local copy instead"
        ) from None


def _from_archive(archive: Path, member: str) -> bytes:
    with tarfile.open(archive) as tar:
        try:
            extracted = tar.extractfile(member)
        except KeyError:
            extracted = None
        if extracted is None:
            raise SourceError(f"{archive} holds no file {member}")
        return extracted.read()
