"""Start-up on the GPU runtime: EMBEDDER_REQUIRE_GPU on this CPU-only machine, and the providers
``/healthz`` reports for every model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from embedder_service.main import create_app
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.encoder import FaceEncoder
from embedder_service.models.manifest import Manifest
from embedder_service.models.pipeline import FacePipeline
from embedder_service.models.session import CPU, CUDA, GpuRequiredError, RuntimeOptions
from embedder_service.service import EmbedderService
from embedder_service.settings import EmbedderSettings
from tests.embedder.api.conftest import FakeDetector, run_embedder_process
from tools.processes import free_port

no_cuda = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this ONNX Runtime has a CUDA provider"
)


@pytest.fixture
def models_with_mtcnn(tiny_models: tuple[Path, Manifest], tmp_path: Path) -> Path:
    """A models directory the service starts from: the tiny encoder, and the tiny graph standing in
    for MTCNN's three nets (start-up opens their sessions and fails before running any)."""
    directory, manifest = tiny_models
    (tmp_path / "manifest.json").write_text(manifest.model_dump_json())
    for name in ("tiny_v1", "pnet", "rnet", "onet"):
        shutil.copy(directory / "tiny_v1.onnx", tmp_path / f"{name}.onnx")
    return tmp_path


@no_cuda
def test_start_up_fails_naming_the_model_what_ort_offers_and_the_cause(models_with_mtcnn: Path) -> None:
    settings = EmbedderSettings(
        models_dir=models_with_mtcnn, encoder="tiny_v1", require_gpu=True, log_json=False
    )
    with pytest.raises(GpuRequiredError) as failure, TestClient(create_app(settings)):
        pass
    message = str(failure.value)
    assert "model pnet.onnx runs on ['CPUExecutionProvider'], not CUDAExecutionProvider" in message
    assert f"offers {ort.get_available_providers()}" in message
    assert "`onnxruntime-gpu`" in message


@no_cuda
def test_python_m_embedder_service_exits_non_zero_saying_why(models_with_mtcnn: Path, tmp_path: Path) -> None:
    env = {
        "MODELS_DIR": str(models_with_mtcnn),
        "EMBEDDER_ENCODER": "tiny_v1",
        "EMBEDDER_REQUIRE_GPU": "true",
        "EMBEDDER_PORT": str(free_port()),
    }
    result = run_embedder_process(tmp_path, env)
    assert result.returncode != 0
    assert "embedder not started" in result.stderr
    assert "EMBEDDER_REQUIRE_GPU is set, but model pnet.onnx runs on" in result.stderr
    assert "the CPU wheel `onnxruntime` is installed" in result.stderr


@pytest.mark.skipif(
    "AzureExecutionProvider" not in ort.get_available_providers(),
    reason="needs a second provider that runs on this machine",
)
def test_health_reports_the_providers_every_model_runs_on(tiny_models: tuple[Path, Manifest]) -> None:
    """The encoder runs on a provider the detector does not: /healthz says only what both run on."""
    directory, manifest = tiny_models
    spec = manifest.encoder("tiny_v1")
    settings = EmbedderSettings(models_dir=directory, log_json=False)
    runtime = RuntimeOptions(providers=("AzureExecutionProvider", CPU), intra_op_threads=1)
    pipeline = FacePipeline(
        detector=FakeDetector(),  # runs on the CPU alone
        aligner=FaceAligner(np.array(spec.landmark_template), spec.input_size, settings.alignment),
        encoder=FaceEncoder(spec, directory, runtime),
        flip_augment=settings.flip_augment,
    )
    with TestClient(create_app(service=EmbedderService(settings, pipeline, manifest))) as client:
        per_model = {model["task"]: model["providers"] for model in client.get("/models").json()["models"]}
        assert per_model == {"recognition": ["AzureExecutionProvider", CPU], "detection": [CPU]}
        assert client.get("/healthz").json()["providers"] == [CPU]
