"""Real services as child processes for the end-to-end tests: one embedder (ONNX models) per
session, and search services on fresh data directories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tools.processes import ServiceProcess, embedder_service, search_service


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Iterator[ServiceProcess]:
    with embedder_service(models_dir).running(timeout_s=180) as process:
        yield process


@contextmanager
def running_search_service(data_dir: Path, embedder: ServiceProcess) -> Iterator[ServiceProcess]:
    with search_service(str(data_dir), embedder.url).running() as process:
        yield process


@pytest.fixture
def search(embedder: ServiceProcess, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_search_service(tmp_path / "data", embedder) as process:
        yield process
