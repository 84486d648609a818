"""The ONNX rebuild of dlib's face-recognition ResNet computes what dlib itself computes.

The reference is dlib's own ``compute_face_descriptor`` on real LFW photos, chipped by dlib's
own pipeline (HOG detector, 5-point shape predictor, ``get_face_chip``), so a wrong topology
guess, a mis-read tensor layout or a wrong normalisation shows up as a large difference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from embedder_service.build.dlib_format import read_network
from embedder_service.build.dlib_resnet import (
    EMBEDDING_DIM,
    INPUT_MEAN,
    INPUT_SCALE,
    INPUT_SIZE,
    build_dlib_resnet,
    locate_dlib_weights,
)
from embedder_service.models.session import RuntimeOptions, create_session

PHOTOS = 20
MAX_ABS_DIFFERENCE = 1e-4


@pytest.fixture(scope="module")
def dlib_weights() -> Path:
    try:
        return locate_dlib_weights()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def dlib_model(dlib_weights: Path) -> onnx.ModelProto:
    return build_dlib_resnet(dlib_weights)


@pytest.fixture(scope="module")
def session(dlib_model: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    path = tmp_path_factory.mktemp("dlib") / "dlib_resnet_v1.onnx"
    onnx.save(dlib_model, str(path))
    return create_session(path, RuntimeOptions(intra_op_threads=2))


@pytest.fixture(scope="module")
def dlib() -> ModuleType:
    return pytest.importorskip("dlib", reason="dlib (pip install dlib-bin) is the reference implementation")


@pytest.fixture(scope="module")
def lfw_chips(dlib: ModuleType, dlib_weights: Path, shared_data: Path) -> list[np.ndarray]:
    """150x150 RGB uint8 chips of real LFW faces, made by dlib's own detection and alignment."""
    photos = sorted((shared_data / "lfw_dev").glob("*/*.jpg"))
    assert len(photos) >= PHOTOS, f"expected LFW photos under {shared_data / 'lfw_dev'}"
    # Evenly spaced over the sorted names: many different people, reproducible.
    picked = photos[:: len(photos) // PHOTOS][:PHOTOS]
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(dlib_weights.parent / "shape_predictor_5_face_landmarks.dat"))
    chips = []
    for photo in picked:
        image = dlib.load_rgb_image(str(photo))
        faces = detector(image, 1)
        if faces:
            chips.append(dlib.get_face_chip(image, landmarks(image, faces[0]), size=INPUT_SIZE, padding=0.25))
    # HOG misses about 1 LFW face in 200; far fewer chips means the pipeline is broken.
    assert len(chips) >= PHOTOS - 2, f"dlib found faces in only {len(chips)} of {PHOTOS} photos"
    return chips


def _normalise(chips: list[np.ndarray]) -> np.ndarray:
    batch = np.stack(chips).astype(np.float32)
    batch = (batch - np.asarray(INPUT_MEAN, np.float32)) * np.float32(INPUT_SCALE)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def test_graph_contract(dlib_model: onnx.ModelProto) -> None:
    graph = dlib_model.graph
    (graph_input,) = graph.input
    (graph_output,) = graph.output

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert graph_input.name == "input"
    assert dims(graph_input) == ["batch", 3, INPUT_SIZE, INPUT_SIZE]
    assert graph_output.name == "embedding"
    assert dims(graph_output) == ["batch", EMBEDDING_DIM]
    props = {p.key: p.value for p in dlib_model.metadata_props}
    assert props["model_name"] == "dlib_resnet_v1"
    assert props["source_package"] == "face_recognition_models"
    assert props["source_version"]
    # Batch-norm is folded away: only the convolutions carry the affine layers' weights.
    assert "BatchNormalization" not in {node.op_type for node in graph.node}


def test_matches_dlib_on_real_chips(
    dlib: ModuleType, dlib_weights: Path, session: ort.InferenceSession, lfw_chips: list[np.ndarray]
) -> None:
    recogniser = dlib.face_recognition_model_v1(str(dlib_weights))
    expected = np.stack([np.asarray(recogniser.compute_face_descriptor(chip)) for chip in lfw_chips])
    (actual,) = session.run(["embedding"], {"input": _normalise(lfw_chips)})

    difference = float(np.abs(actual - expected).max())
    cosine = np.sum(actual * expected, axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    print(f"\n{len(lfw_chips)} chips: max abs difference {difference:.3g}, min cosine {cosine.min():.8f}")
    assert actual.shape == (len(lfw_chips), EMBEDDING_DIM)
    assert difference <= MAX_ABS_DIFFERENCE
    # Raw, not L2-normalised: dlib's 0.6 distance threshold is calibrated on lengths near 1.4.
    assert not np.allclose(np.linalg.norm(actual, axis=1), 1.0, atol=0.05)


def _truncate_inside_first_conv(data: bytes) -> bytes:
    return data[:1000]


def _drop_last_byte(data: bytes) -> bytes:
    return data[:-1]


def _append_byte(data: bytes) -> bytes:
    return data + b"\x00"


def _html_error_page(data: bytes) -> bytes:
    return b"<!DOCTYPE html><title>404 Not Found</title>"


def _bad_tensor_version(data: bytes) -> bytes:
    # The first conv's parameter tensor starts right after its name: version `01 02`.
    version_byte = data.index(b"con_4") + len(b"con_4") + 1
    return data[:version_byte] + b"\x07" + data[version_byte + 1 :]


def _wrong_loss_layer(data: bytes) -> bytes:
    return data.replace(b"loss_metric_2", b"loss_mmod_xx2", 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate_inside_first_conv, "truncated"),
        (_drop_last_byte, "truncated"),
        (_append_byte, "unexpected bytes"),
        (_html_error_page, "not a dlib integer"),
        (_bad_tensor_version, "unsupported tensor version 7"),
        (_wrong_loss_layer, "unsupported dlib loss layer"),
    ],
)
def test_reader_rejects_damaged_files(
    dlib_weights: Path, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    damaged = tmp_path / "damaged.dat"
    damaged.write_bytes(damage(dlib_weights.read_bytes()))
    with pytest.raises(ValueError, match=message):
        read_network(damaged)
    with pytest.raises(ValueError, match=r"damaged\.dat"):
        build_dlib_resnet(damaged)
