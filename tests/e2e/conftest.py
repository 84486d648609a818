"""Real services as child processes for the end-to-end tests: search services on fresh data
directories, beside the session's one embedder (``embedder`` in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.search.polling import poll_until
from tools.processes import ServiceProcess, search_service


@contextmanager
def running_search_service(data_dir: Path, embedder: ServiceProcess, **env: str) -> Iterator[ServiceProcess]:
    """A search service on ``data_dir`` beside ``embedder``; ``env``: settings for the child."""
    service = search_service(str(data_dir), embedder.url)
    service.env |= env
    with service.running() as process:
        yield process


@pytest.fixture
def search(embedder: ServiceProcess, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_search_service(tmp_path / "data", embedder) as process:
        yield process


def ingest_clips(
    search: ServiceProcess, folder: Path, names: Iterable[str], timeout_s: float
) -> dict[str, dict]:
    """Upload the clips (``external_id``: the file name) and wait for every job to be done, within
    ``timeout_s`` for all of them; their finished jobs by file name."""
    jobs: dict[str, int] = {}
    for name in names:
        accepted = httpx.post(
            f"{search.url}/videos",
            files={"video": (name, (folder / name).read_bytes())},
            data={"external_id": name},
        )
        assert accepted.status_code == 202, accepted.text
        jobs[name] = accepted.json()["job_id"]
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict] = {}
    for name, job_id in jobs.items():
        job = poll_until(
            partial(_job, search, job_id),
            lambda job: job["state"] not in ("queued", "running"),
            what=f"{name}: job {job_id} to finish",
            timeout_s=deadline - time.monotonic(),
            interval_s=0.25,
        )
        assert job["state"] == "done", job
        done[name] = job
    return done


def _job(search: ServiceProcess, job_id: int) -> dict[str, Any]:
    response = httpx.get(f"{search.url}/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())
