"""ONNX Runtime session factory: picks execution providers and sizes threads for the host."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
import structlog

log = structlog.get_logger(__name__)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_providers(preferred: Sequence[str]) -> list[str]:
    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    skipped = [p for p in preferred if p not in available]
    if skipped:
        log.info("execution providers unavailable, skipped", skipped=skipped, available=sorted(available))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def create_session(
    model_path: Path, preferred_providers: Sequence[str], intra_op_threads: int = 0
) -> ort.InferenceSession:
    """Open one model with the preferred providers.

    Spinning worker threads are off: on small hosts they starve the other sessions
    (measured 3-5x slower per photo: docs/decisions/embedder.md).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or available_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=choose_providers(preferred_providers)
    )
    # ORT silently falls back to CPU when CUDA libraries are missing: report what really runs.
    log.info("model session ready", model=model_path.name, providers=session.get_providers())
    return session
