"""Our ONNX MTCNN against facenet-pytorch's, recorded by tools/record_mtcnn_reference.py."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageOps

from embedder_service.build.mtcnn_nets import build_mtcnn_nets, locate_mtcnn_weights
from embedder_service.build.torch_pickle import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL_VERSION,
    UnsupportedPickleError,
    load_state_dict,
)
from embedder_service.models import detector as detector_module
from embedder_service.models.detector import REFERENCE_THRESHOLDS, Detection, MtcnnDetector
from embedder_service.models.session import RuntimeOptions

REFERENCE = Path(__file__).parent / "data" / "mtcnn_reference.json"
MAX_PIXELS = 1.0
MAX_SCORE = 1e-3


@pytest.fixture(scope="module", params=["off", "on"], ids=["buckets-off", "buckets-on"])
def detector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MtcnnDetector:
    models_dir = tmp_path_factory.mktemp("mtcnn")
    for name, model in build_mtcnn_nets(locate_mtcnn_weights()).items():
        onnx.save(model, models_dir / f"{name}.onnx")
    return MtcnnDetector(models_dir, RuntimeOptions(intra_op_threads=2, shape_buckets=request.param))


def _load_rgb(path: Path) -> np.ndarray:
    # Exactly as the recorder loads: EXIF orientation applied, then RGB.
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.shared_data
def test_matches_facenet_pytorch_on_real_photos(shared_data: Path, detector: MtcnnDetector) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert len(reference["images"]) >= 30
    settings = reference["settings"]
    # Only O-Net's cut-off is a parameter; P- and R-Net's are fixed at the reference's.
    assert tuple(settings["thresholds"][:2]) == REFERENCE_THRESHOLDS[:2]
    failures: list[str] = []
    worst = {"box": 0.0, "landmarks": 0.0, "score": 0.0}
    for record in reference["images"]:
        found = detector.detect(
            _load_rgb(shared_data / record["path"]),
            min_face_size=settings["min_face_size"],
            threshold=settings["thresholds"][2],
        )
        if len(found) != len(record["faces"]):
            failures.append(f"{record['path']}: {len(found)} faces, reference {len(record['faces'])}")
            continue
        unmatched: list[Detection] = list(found)
        for face in record["faces"]:
            box = np.asarray(face["box"])
            ours = unmatched.pop(int(np.argmax([_iou(d.box, box) for d in unmatched])))
            deviation = {
                "box": float(np.abs(ours.box - box).max()),
                "landmarks": float(np.abs(ours.landmarks - np.asarray(face["landmarks"])).max()),
                "score": abs(ours.score - face["score"]),
            }
            worst = {key: max(worst[key], value) for key, value in deviation.items()}
            if max(deviation["box"], deviation["landmarks"]) > MAX_PIXELS or deviation["score"] > MAX_SCORE:
                failures.append(f"{record['path']}: face at {box.tolist()} deviates {deviation}")
    faces = sum(len(record["faces"]) for record in reference["images"])
    print(f"\n{len(reference['images'])} images, {faces} faces; max deviation from facenet-pytorch: {worst}")
    assert not failures, "\n".join(failures)


def _legacy_file(state_pickle: bytes) -> bytes:
    header = [LEGACY_MAGIC, LEGACY_PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(part, protocol=2) for part in header) + state_pickle


def test_torch_pickle_rejects_forbidden_global() -> None:
    # What a malicious weights file does: call os.system while unpickling.
    payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    with pytest.raises(UnsupportedPickleError, match=r"os\.system is not allowed"):
        load_state_dict(_legacy_file(payload))


def test_torch_pickle_reads_the_shipped_weights() -> None:
    weights = load_state_dict(locate_mtcnn_weights() / "pnet.pt")
    assert weights["conv1.weight"].shape == (10, 3, 3, 3)
    assert weights["conv1.weight"].dtype == np.float32
    assert weights["conv4_2.bias"].shape == (4,)
    assert all(np.isfinite(value).all() for value in weights.values())


def test_torch_pickle_rejects_other_files() -> None:
    with pytest.raises(UnsupportedPickleError, match="magic"):
        load_state_dict(pickle.dumps({"weights": [1.0]}, protocol=2))
    not_tensors = io.BytesIO()
    pickle.dump({"conv1.weight": 1.0}, not_tensors, protocol=2)
    with pytest.raises(UnsupportedPickleError, match="state dict"):
        load_state_dict(_legacy_file(not_tensors.getvalue()))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.full((11, 11, 3), 128, np.uint8),
        np.full((19, 640, 3), 200, np.uint8),  # short side below the 20 px minimum face
        np.zeros((240, 320, 3), np.uint8),
        np.full((240, 320), 255, np.uint8),  # grey
        np.zeros((120, 160, 4), np.uint8),  # RGBA
    ],
    ids=["empty", "11px", "thin", "black", "white-grey", "rgba"],
)
def test_degenerate_images_have_no_faces(detector: MtcnnDetector, image: np.ndarray) -> None:
    assert detector.detect(image) == []


def _adaptive_average(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch's "area" interpolation written plainly, one output pixel at a time."""
    h, w, _ = image.shape
    out = np.empty((3, out_h, out_w), np.float32)
    for i in range(out_h):
        r0, r1 = i * h // out_h, -(-(i + 1) * h // out_h)
        for j in range(out_w):
            c0, c1 = j * w // out_w, -(-(j + 1) * w // out_w)
            window = image[r0:r1, c0:c1].astype(np.float32)
            out[:, i, j] = window.sum(axis=(0, 1)) / np.float32(r1 - r0) / np.float32(c1 - c0)
    return (out - np.float32(127.5)) * np.float32(0.0078125)


@pytest.mark.parametrize("large", [False, True], ids=["int32-table", "wrapping-uint32-table"])
def test_area_resize_matches_adaptive_average_pooling(monkeypatch: pytest.MonkeyPatch, large: bool) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    table = detector_module._integral_image(image)
    if large:
        # What photos above 8.4 megapixels get: a uint32 table whose sums wrap around 2^32.
        monkeypatch.setattr(detector_module, "INT32_SAFE_PIXELS", 0)
        table = detector_module._integral_image(image) + np.uint32(2**32 - 5000)
        assert table.dtype == np.uint32 and (table < 5000).any()
    for out_h, out_w in [(23, 32), (12, 12), (37, 53), (48, 60)]:  # down, equal and up-sampling
        level = detector_module._resize_image(table, out_h, out_w)
        np.testing.assert_array_equal(level[0], _adaptive_average(image, out_h, out_w))
    top, left = np.array([0, 5, 20]), np.array([0, 7, 40])
    height, width = np.array([37, 10, 17]), np.array([53, 30, 13])
    crops = detector_module._resize_regions(table, top, left, height, width, 24)
    for crop, y, x, h, w in zip(crops, top, left, height, width, strict=True):
        np.testing.assert_array_equal(crop, _adaptive_average(image[y : y + h, x : x + w], 24, 24))
