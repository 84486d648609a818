"""Real services as child processes for the end-to-end tests: one embedder (ONNX models) per
session, and search services on fresh data directories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.search.processes import ServiceProcess, free_port, search_service


def _models_loaded(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json().get("status") == "ok"


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Iterator[ServiceProcess]:
    port = free_port()
    env = {"EMBEDDER_PORT": str(port), "MODELS_DIR": str(models_dir), "EMBEDDER_LOG_LEVEL": "WARNING"}
    process = ServiceProcess("embedder_service", port, env, ready=_models_loaded)
    process.start(timeout_s=180)
    yield process
    process.stop()


@contextmanager
def running_search_service(data_dir: Path, embedder: ServiceProcess) -> Iterator[ServiceProcess]:
    process = search_service(str(data_dir), embedder.url)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def search(embedder: ServiceProcess, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_search_service(tmp_path / "data", embedder) as process:
        yield process
