"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACESEARCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MODELS_DIR = Path(os.environ.get("MODELS_DIR", REPO_ROOT / "models"))


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
