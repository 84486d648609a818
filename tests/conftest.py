"""Fixtures shared by every test package, and the markers derived from them.

A test that needs the built ONNX models or the real data in ../shared/data asks for the
``models_dir`` or ``shared_data`` fixture, directly or through other fixtures (the end-to-end tests
do so through ``embedder``). Collection marks every such test ``models`` or ``shared_data``, so that
``make unit`` (``-m "not models and not shared_data and not slow"``) deselects them without each
test file having to remember its markers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.processes import ServiceProcess, embedder_service

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACESEARCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MODELS_DIR = Path(os.environ.get("MODELS_DIR", REPO_ROOT / "models"))

# Fixture name -> the marker that every test whose fixture closure contains it gets.
RESOURCE_MARKERS = {"models_dir": "models", "shared_data": "shared_data"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the resources they need; tryfirst, so that ``-m`` sees the marks."""
    for item in items:
        # The fixture closure: the test's own fixtures and everything they request in turn.
        needed = set(getattr(item, "fixturenames", ()))
        for fixture, marker in RESOURCE_MARKERS.items():
            if fixture in needed and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def _require(path: Path, what: str) -> Path:
    """Skip when a resource is absent on a developer machine; under CI, absence is a failure."""
    if path.exists():
        return path
    reason = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real face photos and clips in ../shared/data (never copied into the repo)."""
    return _require(SHARED_DATA / "README.md", "real face data (../shared/data)").parent


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The ONNX models built by `make models`."""
    return _require(MODELS_DIR / "manifest.json", "built ONNX models (run `make models`)").parent


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Iterator[ServiceProcess]:
    """One embedder process on the real models for the session's end-to-end and browser tests."""
    with embedder_service(models_dir).running(timeout_s=180) as process:
        yield process
