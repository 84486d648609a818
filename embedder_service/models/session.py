"""ONNX Runtime session factory: picks execution providers, their options, and threads for the host."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort
import structlog

from embedder_service.settings import EmbedderSettings

log = structlog.get_logger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# What ``ort.InferenceSession(providers=...)`` takes: a provider's name, or its name and options.
Provider = str | tuple[str, dict[str, str]]


class GpuRequiredError(RuntimeError):
    """EMBEDDER_REQUIRE_GPU is set and a model's session does not run on the CUDA provider."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How every model session of the embedder runs: the providers asked for and their options.

    The defaults, for tests and tools that build one bare, run on the CPU; the service's own come
    from its settings (:meth:`from_settings`).
    """

    providers: tuple[str, ...] = (CPU,)
    intra_op_threads: int = 0  # 0: one per available core
    cuda_device_id: int = 0
    cuda_tf32: bool = False
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    cuda_mem_limit_bytes: int = 0  # 0: no limit
    io_binding: bool = True
    shape_buckets: Literal["auto", "on", "off"] = "auto"
    require_gpu: bool = False  # a session not on the CUDA provider is an error, not a fallback

    @classmethod
    def from_settings(cls, settings: EmbedderSettings) -> RuntimeOptions:
        """Each option from the setting of its name: an option added here without one is an
        AttributeError at start-up, not a default silently kept."""
        values: dict[str, Any] = {field.name: getattr(settings, field.name) for field in fields(cls)}
        values["providers"] = tuple(values["providers"])
        return cls(**values)

    @cached_property  # read per photo and per model run; what ONNX Runtime offers does not change
    def uses_cuda(self) -> bool:
        """Whether sessions will run on the CUDA provider (asked for, and offered by this ONNX Runtime)."""
        return CUDA in self.providers and CUDA in ort.get_available_providers()

    @cached_property
    def buckets(self) -> bool:
        """Whether inputs are padded to their models' shape buckets: "auto" pads on the GPU only."""
        return self.shape_buckets == "on" or (self.shape_buckets == "auto" and self.uses_cuda)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_provider_options(runtime: RuntimeOptions) -> dict[str, str]:
    """The CUDA provider's options, by the names ONNX Runtime's CUDA EP parses (as strings).

    ONNX Runtime rejects an unknown name or value when it creates the provider, and its Python
    API then falls back to the CPU: :func:`create_session` reports that, and fails under
    ``require_gpu``.
    """
    options = {
        "device_id": str(runtime.cuda_device_id),
        "cudnn_conv_algo_search": runtime.cudnn_conv_algo_search,
        # TF32 matmuls and convolutions keep 10 bits of mantissa: embeddings no longer equal the CPU's.
        "use_tf32": "1" if runtime.cuda_tf32 else "0",
        # The arena grows by what a run asks for, not to the next power of two: with inputs
        # padded to a few bucket shapes, doubling would hold twice their memory for good.
        "arena_extend_strategy": "kSameAsRequested",
        # ORT's own defaults today, pinned so that a release changing them cannot change our
        # behaviour unnoticed: copies on the compute stream (a separate copy stream can race,
        # ORT issue #4829), and cuDNN free to use the workspace its fastest algorithm needs.
        "do_copy_in_default_stream": "1",
        "cudnn_conv_use_max_workspace": "1",
    }
    if runtime.cuda_mem_limit_bytes > 0:
        options["gpu_mem_limit"] = str(runtime.cuda_mem_limit_bytes)
    return options


def provider_list(runtime: RuntimeOptions, available: Collection[str]) -> list[Provider]:
    """The providers a session is opened with: those asked for that ``available`` offers, in the
    order asked, the CPU last as the fallback for nodes the others cannot run; CUDA with its options.

    The CPU provider takes no options: its arena is a session option (:func:`create_session`).
    """
    chosen = [name for name in runtime.providers if name in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return [(name, cuda_provider_options(runtime)) if name == CUDA else name for name in chosen]


def provider_names(providers: Sequence[Provider]) -> list[str]:
    return [provider if isinstance(provider, str) else provider[0] for provider in providers]


def io_binding_device(runtime: RuntimeOptions, running: Sequence[str]) -> Literal["cuda"] | None:
    """Where a session's outputs are bound: on the GPU when it runs on CUDA and IO binding is on;
    None: a plain run, with outputs returned on the CPU."""
    return "cuda" if runtime.io_binding and CUDA in running else None


def gpu_problem(
    model: str, asked: Sequence[str], available: Sequence[str], running: Sequence[str]
) -> str | None:
    """Why ``model``'s session does not run on the CUDA provider, for EMBEDDER_REQUIRE_GPU's
    start-up error; None when it does."""
    if CUDA in running:
        return None
    if CUDA not in asked:
        cause = f"EMBEDDER_PROVIDERS ({list(asked)}) does not ask for {CUDA}"
    elif CUDA not in available:
        cause = (
            f"this ONNX Runtime has no {CUDA}: the CPU wheel `onnxruntime` is installed instead of"
            " (or beside) `onnxruntime-gpu`; install pyproject's `gpu` extra (the image's ORT_EXTRA=gpu,"
            " docker-compose.gpu.yml) and not the `cpu` one"
        )
    else:
        cause = (
            f"ONNX Runtime offers {CUDA} but could not start it (its own error comes before this one):"
            " the CUDA or cuDNN libraries were not found, or the base image's CUDA major does not match"
            " the onnxruntime-gpu pinned in pyproject's `gpu` extra (1.31.x needs CUDA 13 and cuDNN 9;"
            " docker-compose.gpu.yml's BASE_IMAGE and the pin move together), or EMBEDDER_CUDA_DEVICE_ID"
            " names no GPU of this machine"
        )
    return (
        f"EMBEDDER_REQUIRE_GPU is set, but model {model} runs on {list(running)}, not {CUDA}."
        f" ONNX Runtime {ort.__version__} offers {list(available)}. Likely cause: {cause}."
    )


def create_session(
    model_path: Path, runtime: RuntimeOptions, cpu_memory_arena: bool = True
) -> ort.InferenceSession:
    """Open one model with the preferred providers.

    Spinning worker threads are off: on small hosts they starve the other sessions
    (measured 3-5x slower per photo: docs/decisions/embedder.md).

    ``cpu_memory_arena=False`` for nets whose input size follows the photo's: ONNX Runtime's
    CPU arena grows to the largest input it has seen and never gives that memory back. CUDA
    keeps its own arena; only the CPU one is switched off.

    ONNX Runtime drops a provider it cannot start (CUDA libraries missing, a bad option) and
    carries on with the CPU: a dropped provider is logged as a warning, and with
    ``runtime.require_gpu`` a session off CUDA raises :class:`GpuRequiredError`.
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = cpu_memory_arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = runtime.intra_op_threads or available_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    available = ort.get_available_providers()
    skipped = [name for name in runtime.providers if name not in available]
    if skipped:
        log.info("execution providers unavailable, skipped", skipped=skipped, available=available)
    providers = provider_list(runtime, available)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    running = session.get_providers()
    dropped = [name for name in provider_names(providers) if name not in running]
    if dropped:
        log.warning("execution providers dropped by ONNX Runtime", model=model_path.name, dropped=dropped)
    log.info("model session ready", model=model_path.name, providers=running)
    if runtime.require_gpu:
        problem = gpu_problem(model_path.name, runtime.providers, available, running)
        if problem is not None:
            raise GpuRequiredError(problem)
        # Else a provider failure during a run would also move the session to the CPU for good.
        session.disable_fallback()
    return session


def common_providers(per_model: Sequence[Sequence[str]]) -> list[str]:
    """The providers every one of the models runs on, in the first model's order."""
    if not per_model:
        return []
    return [name for name in per_model[0] if all(name in others for others in per_model[1:])]


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
