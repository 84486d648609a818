"""The session factory: CUDA provider options, the IO-binding choice and run, EMBEDDER_REQUIRE_GPU.

No GPU here: the CUDA options are checked as the list ONNX Runtime is handed, against the option
names its CUDA provider parses (onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc);
the IO-bound run is checked on the CPU device, the same calls with another device name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedder_service.models.base import OnnxModel, run_bound
from embedder_service.models.session import (
    CPU,
    CUDA,
    GpuRequiredError,
    RuntimeOptions,
    common_providers,
    create_session,
    gpu_problem,
    io_binding_device,
    provider_list,
    provider_names,
)
from embedder_service.settings import EmbedderSettings

# The option names ONNX Runtime's CUDA provider parses, and the values each one accepts
# (booleans and flags are parsed as integers): a name or value outside these fails the
# provider, which ORT's Python API then drops for the CPU.
CUDA_OPTION_VALUES: dict[str, set[str] | None] = {
    "device_id": None,  # an integer below the GPU count
    "gpu_mem_limit": None,  # bytes
    "arena_extend_strategy": {"kNextPowerOfTwo", "kSameAsRequested"},
    "cudnn_conv_algo_search": {"EXHAUSTIVE", "HEURISTIC", "DEFAULT"},
    "do_copy_in_default_stream": {"0", "1"},
    "cudnn_conv_use_max_workspace": {"0", "1"},
    "use_tf32": {"0", "1"},
}
BOTH = [CUDA, CPU]
GPU_RUNTIME = RuntimeOptions(providers=(CUDA, CPU))


def cuda_options(runtime: RuntimeOptions) -> dict[str, str]:
    first, *rest = provider_list(runtime, available=BOTH)
    assert rest == [CPU]
    assert isinstance(first, tuple) and first[0] == CUDA
    return first[1]


def test_a_cpu_only_runtime_asks_for_the_cpu_alone() -> None:
    assert provider_list(RuntimeOptions(), available=BOTH) == [CPU]


def test_cuda_asked_for_but_not_offered_leaves_the_cpu() -> None:
    assert provider_list(GPU_RUNTIME, available=[CPU]) == [CPU]


def test_the_cpu_comes_last_even_when_not_asked_for() -> None:
    assert provider_names(provider_list(RuntimeOptions(providers=(CUDA,)), BOTH)) == [CUDA, CPU]


def test_default_cuda_options_are_exact_and_do_not_double_the_arena() -> None:
    assert cuda_options(GPU_RUNTIME) == {
        "device_id": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "0",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
        "cudnn_conv_use_max_workspace": "1",
    }


@pytest.mark.parametrize(
    "runtime",
    [
        GPU_RUNTIME,
        RuntimeOptions(providers=(CUDA, CPU), cuda_tf32=True, cuda_device_id=3, cuda_mem_limit_bytes=8 << 30),
        *(
            RuntimeOptions(providers=(CUDA, CPU), cudnn_conv_algo_search=mode)
            for mode in ("HEURISTIC", "DEFAULT")
        ),
    ],
)
def test_every_cuda_option_is_one_the_cuda_provider_parses(runtime: RuntimeOptions) -> None:
    for name, value in cuda_options(runtime).items():
        assert name in CUDA_OPTION_VALUES, name
        accepted = CUDA_OPTION_VALUES[name]
        assert value.isdigit() if accepted is None else value in accepted, (name, value)


@pytest.mark.parametrize(("tf32", "expected"), [(False, "0"), (True, "1")])
def test_tf32_follows_the_setting(tf32: bool, expected: str) -> None:
    assert cuda_options(RuntimeOptions(providers=(CUDA, CPU), cuda_tf32=tf32))["use_tf32"] == expected


@pytest.mark.parametrize("mode", ["EXHAUSTIVE", "HEURISTIC", "DEFAULT"])
def test_the_algorithm_search_follows_the_setting(mode: str) -> None:
    settings = EmbedderSettings(cudnn_conv_algo_search=mode)
    assert cuda_options(RuntimeOptions.from_settings(settings))["cudnn_conv_algo_search"] == mode


def test_device_id_and_memory_limit_follow_the_settings() -> None:
    settings = EmbedderSettings(cuda_device_id=1, cuda_mem_limit_bytes=4_000_000_000)
    options = cuda_options(RuntimeOptions.from_settings(settings))
    assert (options["device_id"], options["gpu_mem_limit"]) == ("1", "4000000000")
    assert "gpu_mem_limit" not in cuda_options(RuntimeOptions.from_settings(EmbedderSettings()))


def test_every_runtime_option_follows_its_setting() -> None:
    """Each option set away from both its default and the settings' default comes through."""
    chosen = RuntimeOptions(
        providers=("AzureExecutionProvider", CPU),
        intra_op_threads=3,
        cuda_device_id=2,
        cuda_tf32=True,
        cudnn_conv_algo_search="DEFAULT",
        cuda_mem_limit_bytes=1 << 30,
        io_binding=False,
        shape_buckets="off",
        require_gpu=True,
    )
    settings = EmbedderSettings(**{**dataclasses.asdict(chosen), "providers": list(chosen.providers)})
    assert RuntimeOptions.from_settings(settings) == chosen


@pytest.mark.parametrize(
    ("io_binding", "running", "expected"),
    [
        (True, [CUDA, CPU], "cuda"),
        (False, [CUDA, CPU], None),
        (True, [CPU], None),  # asked for CUDA, but the session fell back to the CPU
        (False, [CPU], None),
    ],
)
def test_outputs_are_bound_on_the_gpu_only_when_the_session_runs_there(
    io_binding: bool, running: list[str], expected: str | None
) -> None:
    assert (
        io_binding_device(RuntimeOptions(providers=(CUDA, CPU), io_binding=io_binding), running) == expected
    )


@pytest.fixture(scope="module")
def two_output_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N x 5 -> (N x 3 linear map, N x 3 its ReLU): two outputs of different values."""
    weights = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["linear"]), helper.make_node("Relu", ["linear"], ["relu"])],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info("linear", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    path = tmp_path_factory.mktemp("two_outputs") / "two_outputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_an_io_bound_run_returns_what_a_plain_run_does(two_output_model: Path) -> None:
    session = create_session(two_output_model, RuntimeOptions(intra_op_threads=1))
    # A non-contiguous view: the binding must see the same values as the plain run.
    inputs = np.random.default_rng(2).standard_normal((7, 10)).astype(np.float32)[:, ::2]
    plain = session.run(None, {"x": inputs})
    bound = run_bound(session, "x", inputs, "cpu", 0)
    assert len(bound) == len(plain) == 2
    for got, expected in zip(bound, plain, strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected)


def test_a_model_on_the_cpu_runs_as_a_plain_session_does(two_output_model: Path) -> None:
    model = OnnxModel(two_output_model, RuntimeOptions(intra_op_threads=1))
    inputs = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    expected = create_session(two_output_model, RuntimeOptions(intra_op_threads=1)).run(None, {"x": inputs})
    for got, want in zip(model.run(inputs), expected, strict=True):
        assert np.array_equal(got, want)
    assert model.input_shapes == {(4, 5)}


def test_gpu_problem_is_none_on_cuda() -> None:
    assert gpu_problem("pnet.onnx", BOTH, BOTH, [CUDA, CPU]) is None


@pytest.mark.parametrize(
    ("asked", "available", "cause"),
    [
        ([CPU], BOTH, "EMBEDDER_PROVIDERS"),
        (BOTH, [CPU], "the CPU wheel `onnxruntime` is installed"),
        (BOTH, BOTH, "CUDA or cuDNN libraries were not found"),
    ],
)
def test_gpu_problem_names_the_model_what_ort_offers_and_the_likely_cause(
    asked: list[str], available: list[str], cause: str
) -> None:
    problem = gpu_problem("rnet.onnx", asked, available, [CPU])
    assert problem is not None
    assert "EMBEDDER_REQUIRE_GPU" in problem and "model rnet.onnx runs on ['CPUExecutionProvider']" in problem
    assert f"offers {available}" in problem
    assert cause in problem


def test_require_gpu_refuses_a_session_that_does_not_ask_for_cuda(two_output_model: Path) -> None:
    with pytest.raises(GpuRequiredError, match=r"two_outputs\.onnx runs on \['CPUExecutionProvider'\]"):
        create_session(two_output_model, RuntimeOptions(require_gpu=True))


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this ONNX Runtime has a CUDA provider")
def test_require_gpu_refuses_to_open_a_model_on_a_cpu_only_onnx_runtime(two_output_model: Path) -> None:
    runtime = RuntimeOptions.from_settings(EmbedderSettings(require_gpu=True))
    assert runtime.providers == (CUDA, CPU)
    with pytest.raises(GpuRequiredError, match="the CPU wheel `onnxruntime` is installed"):
        OnnxModel(two_output_model, runtime)  # opened at once: start-up checks every model


def test_common_providers_are_those_every_model_runs_on() -> None:
    assert common_providers([[CUDA, CPU], [CUDA, CPU]]) == [CUDA, CPU]
    assert common_providers([[CUDA, CPU], [CPU]]) == [CPU]
    assert common_providers([]) == []


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a GPU")
def test_on_a_gpu_the_options_are_taken_and_bound_outputs_match_plain_ones(two_output_model: Path) -> None:
    """Run where there is a GPU (`pytest tests/embedder/test_session.py`): ONNX Runtime drops CUDA
    for a misspelt option, and with TF32 off the GPU's results stay within float32 rounding of the CPU's."""
    runtime = RuntimeOptions(providers=(CUDA, CPU), require_gpu=True, cudnn_conv_algo_search="HEURISTIC")
    model = OnnxModel(two_output_model, runtime)
    assert model.providers_in_use[0] == CUDA
    inputs = np.random.default_rng(4).standard_normal((64, 5)).astype(np.float32)
    bound = model.run(inputs)
    plain = model.session.run(None, {"x": inputs})
    on_cpu = create_session(two_output_model, RuntimeOptions(intra_op_threads=1)).run(None, {"x": inputs})
    for got, same_gpu, cpu in zip(bound, plain, on_cpu, strict=True):
        assert np.array_equal(got, same_gpu)
        np.testing.assert_allclose(got, cpu, rtol=1e-6, atol=1e-6)
