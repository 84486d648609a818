"""ONNX Runtime session factory: picks execution providers, their options, and threads for the host."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnxruntime as ort
import structlog

from embedder_service.settings import EmbedderSettings

log = structlog.get_logger(__name__)

CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class RuntimeOptions:
    """How every model session of the embedder runs: the providers asked for and their options."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0  # 0: one per available core
    cuda_device_id: int = 0
    cuda_tf32: bool = False
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    cuda_mem_limit_bytes: int = 0  # 0: no limit
    io_binding: bool = True
    shape_buckets: Literal["auto", "on", "off"] = "auto"

    @classmethod
    def from_settings(cls, settings: EmbedderSettings) -> RuntimeOptions:
        return cls(
            providers=tuple(settings.providers),
            intra_op_threads=settings.intra_op_threads,
            cuda_device_id=settings.cuda_device_id,
            cuda_tf32=settings.cuda_tf32,
            cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
            cuda_mem_limit_bytes=settings.cuda_mem_limit_bytes,
            io_binding=settings.io_binding,
            shape_buckets=settings.shape_buckets,
        )

    @property
    def uses_cuda(self) -> bool:
        """Whether sessions will run on the CUDA provider (asked for, and offered by this ONNX Runtime)."""
        return CUDA in choose_providers(self.providers)

    @property
    def buckets(self) -> bool:
        """Whether inputs are padded to their models' shape buckets: "auto" pads on the GPU only."""
        return self.shape_buckets == "on" or (self.shape_buckets == "auto" and self.uses_cuda)


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
    model_path: Path, runtime: RuntimeOptions, cpu_memory_arena: bool = True
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
    options.intra_op_num_threads = runtime.intra_op_threads or available_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=choose_providers(runtime.providers)
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
