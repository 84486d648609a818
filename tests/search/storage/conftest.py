"""Fixtures of the storage tests: a store opened on a fresh data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from search_service.storage import Storage


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def storage(data_dir: Path) -> Iterator[Storage]:
    opened = Storage.open(data_dir)
    yield opened
    opened.close()
