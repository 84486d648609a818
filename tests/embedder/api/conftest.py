"""The embedder's HTTP API over a stand-in detector and a tiny encoder built here.

Everything behind the routes is the service's own code (decoding, limits, options, alignment,
batching, flip averaging, ONNX Runtime, the response), except face detection: MTCNN needs the
built models, so :class:`FakeDetector` "sees" a fixed set of faces, filtered by the options
the request reaches it with, as MTCNN filters its own. Nothing here reads ``models/`` or
``../shared``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from embedder_service.main import create_app
from embedder_service.models.aligner import FaceAligner
from embedder_service.models.base import OnnxModel
from embedder_service.models.detector import Detection, pyramid_work
from embedder_service.models.encoder import EncoderSpec, FaceEncoder
from embedder_service.models.manifest import Manifest, ModelRecord
from embedder_service.models.pipeline import FaceDetector, FacePipeline
from embedder_service.models.session import RuntimeOptions
from embedder_service.service import EmbedderService
from embedder_service.settings import EmbedderSettings
from tests.conftest import REPO_ROOT

CHIP = 16
DIMENSION = 8
MATCH_THRESHOLD = 0.42
# Where the five landmarks sit in a face box, as fractions of its side.
LANDMARKS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
# The faces the stand-in detector sees, left to right along the top of an image: (side, score).
# Each is found only where it fits in the image, is at least min_face_size and scores above
# the O-Net threshold, so the options' effects show in the answer.
FACES = [(16, 0.99), (40, 0.95), (40, 0.85), (40, 0.6)]
GAP = 4
FACE_ROW_WIDTH = GAP + sum(side + GAP for side, _ in FACES)  # an image this wide shows them all
_FAKE_DETECTOR_DIR = tempfile.TemporaryDirectory(prefix="fake_detector_")  # removed at exit


@functools.cache
def fake_detector_model() -> OnnxModel:
    """The stand-in's model, as GET /models and /healthz see it: a real graph (an identity), so
    that its session reports the providers it runs on; detection never runs it."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["same"])],
        "fake_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    path = Path(_FAKE_DETECTOR_DIR.name) / "fake_detector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return OnnxModel(path, RuntimeOptions(intra_op_threads=1))


class FakeDetector(FaceDetector):
    """A detector's interface without its models: finds the faces of :data:`FACES` that pass,
    and costs what MTCNN's detection would."""

    smallest_face = 12

    @property
    def models(self) -> list[OnnxModel]:
        return [fake_detector_model()]

    def work(self, height: int, width: int, min_face_size: int) -> int:
        return pyramid_work(height, width, min_face_size)

    def detect(
        self,
        image: np.ndarray,
        min_face_size: int,
        threshold: float,
        max_faces: int | None = None,
    ) -> list[Detection]:
        height, width = image.shape[:2]
        found = []
        left = GAP
        for side, score in FACES:
            box = np.array([left, GAP, left + side, GAP + side], dtype=np.float64)
            if box[2] <= width and box[3] <= height and side >= min_face_size and score > threshold:
                found.append(Detection(box=box, score=score, landmarks=box[:2] + LANDMARKS * side))
            left += side + GAP
        found.sort(key=lambda face: -face.score)
        return found[:max_faces]


def tiny_encoder() -> onnx.ModelProto:
    """N x 3 x CHIP x CHIP -> N x DIMENSION: one fixed random linear map."""
    weights = np.random.default_rng(0).standard_normal((3 * CHIP * CHIP, DIMENSION)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["chips"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["embedding"]),
        ],
        "tiny_encoder",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["N", 3, CHIP, CHIP])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIMENSION])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """A models directory holding the tiny encoder, and the manifest that describes it."""
    directory = tmp_path_factory.mktemp("tiny_models")
    path = directory / "tiny_v1.onnx"
    onnx.save(tiny_encoder(), path)
    spec = EncoderSpec(
        name="tiny_v1",
        file=path.name,
        dimension=DIMENSION,
        input_size=CHIP,
        mean=(127.5, 127.5, 127.5),
        scale=(1 / 128, 1 / 128, 1 / 128),
        landmark_template=[(x, y) for x, y in (LANDMARKS * CHIP).tolist()],
        match_threshold=MATCH_THRESHOLD,
    )

    def record(name: str, task: str, file: str, sha256: str) -> ModelRecord:
        return ModelRecord.model_validate(
            {
                "name": name,
                "task": task,
                "file": file,
                "sha256": sha256,
                "version": "1",
                "source_package": "tests",
                "source_version": "0",
                "source_file": "tests/embedder/api/conftest.py",
                "licence": "test data",
            }
        )

    detector_file = fake_detector_model().model_path
    records = [
        record(
            "fake_detector",
            "detection",
            detector_file.name,
            hashlib.sha256(detector_file.read_bytes()).hexdigest(),
        ),
        record("tiny_v1", "recognition", path.name, hashlib.sha256(path.read_bytes()).hexdigest()),
        # Built, as `make models` builds every detector asked for, but not the one the pipeline runs.
        record("other_detector", "detection", "other_detector.onnx", "0" * 64),
    ]
    return directory, Manifest(models=records, encoders=[spec])


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tiny_models: tuple[Path, Manifest]) -> Iterator[AppFactory]:
    """Starts the app on settings read from the environment, then ``overrides``; returns its client."""
    directory, manifest = tiny_models
    spec = manifest.encoder("tiny_v1")

    def make(stack: ExitStack, detector: FaceDetector | None = None, **overrides: Any) -> TestClient:
        """``detector`` replaces the :class:`FakeDetector`; ``overrides`` are settings."""
        settings = EmbedderSettings(
            models_dir=directory, log_json=False, providers=["CPUExecutionProvider"], **overrides
        )
        pipeline = FacePipeline(
            detector=detector or FakeDetector(),
            aligner=FaceAligner(np.array(spec.landmark_template), spec.input_size, settings.alignment),
            encoder=FaceEncoder(spec, directory, RuntimeOptions(intra_op_threads=1)),
            flip_augment=settings.flip_augment,
            detect_max_side=settings.detect_max_side,
        )
        app = create_app(service=EmbedderService(settings, pipeline, manifest))
        return stack.enter_context(TestClient(app))

    with ExitStack() as stack:
        yield functools.partial(make, stack)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


def photo(width: int = FACE_ROW_WIDTH, height: int = 64, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A noisy image of the given size: noise, so that different seeds embed differently."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def run_embedder_process(
    cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m embedder_service`` to its end, with none of this environment's EMBEDDER_ settings
    (and no .env: it runs in ``cwd``) but ``env``; for start-up failures."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("EMBEDDER_")}
    return subprocess.run(
        [sys.executable, "-m", "embedder_service"],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
