"""Where the benchmark finds the repository, the shared data and the reference venv."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# facenet-pytorch needs torch<2.3 and its own venv (recipe in tools/record_mtcnn_reference.py).
REFERENCE_PYTHON = REPO_ROOT / ".venv-ref" / "bin" / "python"


def default_data() -> Path:
    """The shared real-data folder (FACESEARCH_SHARED_DATA overrides, as for the tests)."""
    return Path(os.environ.get("FACESEARCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
