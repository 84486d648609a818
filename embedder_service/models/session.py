"""ONNX Runtime session factory: picks execution providers and sizes threads for the host."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
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
    model_path: Path,
    preferred_providers: Sequence[str],
    intra_op_threads: int = 0,
    cpu_memory_arena: bool = True,
) -> ort.InferenceSession:
    """Open one model with the preferred providers.

    Spinning worker threads are off: on small hosts they starve the other sessions
    (measured 3-5x slower per photo: docs/decisions/embedder.md).

    ``cpu_memory_arena=False`` for nets whose input size follows the photo's: ONNX Runtime's
    CPU arena grows to the largest input it has seen and never gives that memory back. CUDA
    keeps its own arena; only the CPU one is switched off.
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = cpu_memory_arena
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


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; musl and macOS have none
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _malloc_trim()


def return_free_memory() -> None:
    """Hands the heap's free pages back to the system (glibc's ``malloc_trim``).

    Without an arena, the detector's tensors come from malloc, and glibc keeps what they
    freed inside its heaps, so the process's memory would stay at its peak after a large photo;
    Python has no binding for ``malloc_trim``, hence ctypes. It walks every heap (tens of ms),
    so the service calls it only after large requests (docs/decisions/embedder.md).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
