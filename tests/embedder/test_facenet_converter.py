"""The FaceNet converter against facenet-pytorch's own InceptionResnetV1, run by torch (test-only).

The publisher's checkpoint cannot be downloaded here, so the reference is the same network with
random weights (batch-norm statistics included), saved by torch.save in both of its file formats.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from embedder_service.build.__main__ import build_all, main
from embedder_service.build.facenet import (
    CHECKPOINT_SHA256,
    DIMENSION,
    ENCODER_NAME,
    INPUT_SIZE,
    MATCH_THRESHOLD,
    CheckpointError,
    build_facenet,
    fetch_checkpoint,
    verify_checkpoint,
)
from embedder_service.build.torch_pickle import load_state_dict
from embedder_service.main import create_app
from embedder_service.models.encoder import FaceEncoder
from embedder_service.models.manifest import MANIFEST_NAME, load_manifest
from embedder_service.models.session import RuntimeOptions
from embedder_service.settings import EmbedderSettings

TOLERANCE = 1e-4


def _torch() -> Any:
    """torch, the test-only reference: skipped where it is not installed, a failure under CI."""
    try:
        import torch
    except ImportError:
        reason = "torch is not installed (pip install torch==2.13.0, the `test` extra has it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must provide it")
        pytest.skip(reason)
    return torch


def _inception_resnet_v1() -> Any:
    """facenet-pytorch's InceptionResnetV1 class, from its module file alone.

    ``import facenet_pytorch`` imports its MTCNN, which needs torchvision (not installed: the
    network itself does not use it). The package and its ``models`` folders are stood in for while
    the one module is imported, then taken out again, so later lookups see the real package.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("facenet-pytorch is not installed in the venv (`make venv` installs it)")
    root = Path(next(iter(spec.submodule_search_locations)))
    saved = {name: module for name, module in sys.modules.items() if name.startswith("facenet_pytorch")}
    try:
        for name, folder in (
            ("facenet_pytorch", root),
            ("facenet_pytorch.models", root / "models"),
            ("facenet_pytorch.models.utils", root / "models" / "utils"),
        ):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        return importlib.import_module("facenet_pytorch.models.inception_resnet_v1").InceptionResnetV1
    finally:
        for name in [name for name in sys.modules if name.startswith("facenet_pytorch")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _random_network(torch: Any, network: Any, seed: int) -> Any:
    """The network in eval mode with random weights that keep its activations alive.

    torch's default initialisation shrinks the signal through 20 residual blocks until every input
    gives nearly the same embedding, which would hide a wrong layer; He-normal weights and
    batch-norm statistics away from 0 and 1 keep different inputs apart by far more than the
    tolerance (checked in the test).
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith(".weight") and tensor.dim() > 1:
                tensor.normal_(0.0, math.sqrt(2 / tensor[0].numel()))
            elif name.endswith("conv2d.bias"):
                tensor.uniform_(-0.1, 0.1)
            elif name.endswith("running_mean"):
                tensor.uniform_(-0.2, 0.2)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("bn.weight"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("bn.bias"):
                tensor.uniform_(-0.1, 0.1)
    return network.eval()


class Reference:
    def __init__(self, tmp: Path) -> None:
        self.torch = torch = _torch()
        self.network_class = _inception_resnet_v1()
        # With a classifier, as the publisher's checkpoint has one (8631 VGGFace2 identities;
        # fewer here): the converter must ignore it.
        self.network = _random_network(torch, self.network_class(), seed=0)
        self.network.logits = torch.nn.Linear(512, 16)
        self.legacy = tmp / "legacy.pt"
        self.zip = tmp / "zip.pt"
        torch.save(self.network.state_dict(), self.legacy, _use_new_zipfile_serialization=False)
        torch.save(self.network.state_dict(), self.zip)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return np.asarray(self.network(self.torch.from_numpy(batch)).numpy())

    def save(self, state: dict[str, Any], path: Path) -> bytes:
        self.torch.save(state, path)
        return path.read_bytes()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference(tmp_path_factory.mktemp("facenet"))


@pytest.fixture(scope="session")
def converted(reference: Reference) -> ort.InferenceSession:
    model = build_facenet(reference.legacy.read_bytes())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _pixels(count: int, seed: int) -> np.ndarray:
    """N x 160 x 160 x 3 uint8 RGB of 32-pixel blocks: unlike pixel noise, which global average
    pooling cancels out, coarse images give a random network distinct embeddings."""
    coarse = np.random.default_rng(seed).integers(0, 256, (count, INPUT_SIZE // 32, INPUT_SIZE // 32, 3))
    return np.kron(coarse, np.ones((1, 32, 32, 1))).astype(np.uint8)


def _standardised(pixels: np.ndarray) -> np.ndarray:
    """facenet-pytorch's fixed_image_standardization, channels first: (pixel - 127.5) / 128."""
    return ((pixels.transpose(0, 3, 1, 2) - 127.5) / 128).astype(np.float32)


def test_onnx_matches_torch_to_1e_4(reference: Reference, converted: ort.InferenceSession) -> None:
    batch = _standardised(_pixels(3, seed=1))
    (ours,) = converted.run(None, {"input": batch})
    theirs = reference.embed(batch)
    assert ours.shape == theirs.shape == (3, DIMENSION)
    assert np.abs(ours - theirs).max() < TOLERANCE
    # Different inputs are far apart next to the tolerance: a wrong layer could not hide in it.
    assert np.abs(theirs[0] - theirs[1]).max() > 100 * TOLERANCE


def test_zip_and_legacy_checkpoints_read_the_same(reference: Reference) -> None:
    legacy = load_state_dict(reference.legacy)
    from_zip = load_state_dict(reference.zip)
    expected = {name: tensor.numpy() for name, tensor in reference.network.state_dict().items()}
    assert legacy.keys() == from_zip.keys() == expected.keys()
    for name, tensor in expected.items():
        np.testing.assert_array_equal(legacy[name], tensor, err_msg=name)
        np.testing.assert_array_equal(from_zip[name], tensor, err_msg=name)


def test_another_embedding_size_is_refused(reference: Reference, tmp_path: Path) -> None:
    torch = reference.torch
    network = reference.network_class()
    network.last_linear = torch.nn.Linear(1792, 128, bias=False)
    network.last_bn = torch.nn.BatchNorm1d(128, eps=0.001)
    raw = reference.save(network.state_dict(), tmp_path / "facenet128.pt")
    with pytest.raises(
        CheckpointError, match=r"last_linear\.weight has shape \(128, 1792\), .* needs \(512, 1792\)"
    ):
        build_facenet(raw)


def test_a_checkpoint_missing_a_layer_is_refused(reference: Reference, tmp_path: Path) -> None:
    state = reference.network.state_dict()
    del state["repeat_2.3.conv2d.weight"]
    raw = reference.save(state, tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match=r"lacks repeat_2\.3\.conv2d\.weight"):
        build_facenet(raw)


def test_bytes_that_are_no_state_dict_are_refused() -> None:
    with pytest.raises(CheckpointError, match=r"not a readable torch\.save state dict"):
        build_facenet(b"<html>404: Not Found</html>")


def test_a_file_with_another_sha256_is_refused(reference: Reference, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(reference.legacy.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=r"has sha256 [0-9a-f]{64} .* not the pinned"):
        verify_checkpoint(damaged)


def test_a_download_with_another_sha256_is_refused_and_not_kept(reference: Reference, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"not the pinned 0{64}"):
        fetch_checkpoint(cache, url=reference.legacy.as_uri(), sha256="0" * 64)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_download_with_the_pinned_sha256_is_kept(reference: Reference, tmp_path: Path) -> None:
    raw = reference.legacy.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    cache = tmp_path / "cache"
    assert fetch_checkpoint(cache, url=reference.legacy.as_uri(), sha256=sha256) == raw
    assert (cache / reference.legacy.name).read_bytes() == raw


@pytest.fixture(scope="session")
def built(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("models")
    build_all(directory, facenet_checkpoint=reference.zip.read_bytes())
    yield directory


def test_make_models_registers_facenet_and_its_encoder_embeds_like_torch(
    reference: Reference, built: Path
) -> None:
    manifest = load_manifest(built)
    spec = manifest.encoder(ENCODER_NAME)
    assert (spec.dimension, spec.input_size, spec.channel_order) == (DIMENSION, INPUT_SIZE, "RGB")
    assert manifest.record(spec.file).task == "recognition"
    assert manifest.encoder("dlib_resnet_v1").dimension == 128  # the default stays
    chips = _pixels(2, seed=2)
    encoder = FaceEncoder(spec, built, RuntimeOptions(intra_op_threads=2))
    ours = encoder.embed(chips)
    theirs = reference.embed(_standardised(chips))
    assert np.abs(ours - theirs).max() < TOLERANCE


def test_make_models_refuses_a_checkpoint_that_is_not_the_pinned_one(
    reference: Reference, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "--models-dir",
                str(tmp_path),
                "--encoders",
                "facenet-vggface2",
                "--facenet-file",
                str(reference.legacy),
            ]
        )
    assert exited.value.code == 2
    assert f"not the pinned {CHECKPOINT_SHA256}" in capsys.readouterr().err
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_the_embedder_serves_facenet_when_configured(built: Path, shared_data: Path) -> None:
    settings = EmbedderSettings(models_dir=built, encoder=ENCODER_NAME, log_json=False)
    with TestClient(create_app(settings)) as client:
        models = client.get("/models").json()
        photo = (shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()
        answer = client.post("/faces", files=[("image", ("face.jpg", photo, "image/jpeg"))])
    assert (models["embedding_model"], models["embedding_dimension"]) == (ENCODER_NAME, DIMENSION)
    assert models["match_threshold"] == MATCH_THRESHOLD
    assert answer.status_code == 200
    body = answer.json()
    assert (body["model"], body["dimension"]) == (ENCODER_NAME, DIMENSION)
    (face,) = body["images"][0]["faces"]
    assert len(face["embedding"]) == DIMENSION
    assert np.linalg.norm(face["embedding"]) == pytest.approx(1.0, abs=1e-5)
