"""Pinned files the build downloads: kept in the cache once verified, never kept otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from embedder_service.build.detectors import YUNET, DetectorSource, SourceError, fetch


def _published(tmp_path: Path, data: bytes, sha256: str | None = None) -> tuple[Path, DetectorSource]:
    """A stand-in for YuNet's publisher: a file:// URL serving ``data``, pinned to ``sha256``."""
    origin = tmp_path / "origin" / "yunet_n_dynamic.onnx"
    origin.parent.mkdir()
    origin.write_bytes(data)
    pin = hashlib.sha256(data).hexdigest() if sha256 is None else sha256
    return origin, dataclasses.replace(YUNET, url=origin.as_uri(), sha256=pin)


def test_a_detector_is_downloaded_once_and_then_taken_from_the_cache(tmp_path: Path) -> None:
    origin, source = _published(tmp_path, b"the detector's bytes")
    cache = tmp_path / "cache"
    assert fetch(source, None, cache) == b"the detector's bytes"
    origin.unlink()  # the publisher is gone: a rebuild must not need it
    assert fetch(source, None, cache) == b"the detector's bytes"


def test_a_download_that_is_not_the_pinned_file_is_refused_and_not_kept(tmp_path: Path) -> None:
    _, source = _published(tmp_path, b"a tampered file", sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match=r"sha256 is [0-9a-f]{64}, not the pinned 0{64}"):
        fetch(source, None, cache)
    assert list(cache.iterdir()) == []


def test_a_failed_download_says_to_give_a_local_copy(tmp_path: Path) -> None:
    source = dataclasses.replace(YUNET, url=(tmp_path / "nowhere.onnx").as_uri())
    with pytest.raises(SourceError, match=r"cannot download yunet .*; give a local copy instead"):
        fetch(source, None, tmp_path / "cache")
