"""Fixtures of the search service tests: a fake embedder and an app on a fresh data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer

from facesearch_common.access import DEFAULT_ALLOWED_HOSTS
from search_service.main import create_app
from search_service.settings import DiskSettings, EmbedderClientSettings, MiB, SearchSettings
from tests.search.fakes import FakeEmbedder


@pytest.fixture(autouse=True)
def _test_client_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve TestClient's Host ("testserver") besides loopback: the Host allow-list refuses it."""
    monkeypatch.setenv("SEARCH_ALLOWED_HOSTS", ",".join([*DEFAULT_ALLOWED_HOSTS, "testserver"]))


@pytest.fixture
def fake_embedder(httpserver: HTTPServer) -> FakeEmbedder:
    return FakeEmbedder(httpserver)


@pytest.fixture
def make_settings(tmp_path: Path, fake_embedder: FakeEmbedder) -> Callable[..., SearchSettings]:
    """Settings on this test's data directory and fake embedder. Keywords override settings; a dict
    updates a group, e.g. ``make_settings(video={"batch_frames": 1})``."""

    def make(**overrides: Any) -> SearchSettings:
        settings = SearchSettings(
            data_dir=tmp_path / "data",
            embedder=EmbedderClientSettings(url=fake_embedder.url, backoff_s=0.01),
            # Each test's store would otherwise hold the default 16 MiB reserve on disk.
            disk=DiskSettings(reserve_bytes=MiB),
            log_json=False,
            log_level="WARNING",
        )
        updates = {
            name: getattr(settings, name).model_copy(update=value) if isinstance(value, dict) else value
            for name, value in overrides.items()
        }
        return settings.model_copy(update=updates)

    return make


@pytest.fixture
def client(make_settings: Callable[..., SearchSettings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client
