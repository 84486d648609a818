"""Shape buckets: every model runs on a few input shapes declared in advance, with the results of
unpadded runs; P-Net's packed canvases equal P-Net on each pyramid level alone."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageOps

from embedder_service.build.__main__ import build_all
from embedder_service.build.mtcnn_nets import build_mtcnn_nets, locate_mtcnn_weights
from embedder_service.models.base import OnnxModel
from embedder_service.models.buckets import BatchLadder, pack
from embedder_service.models.detection import DetectionOptions
from embedder_service.models.detector import PACKED_MASK_OFF
from embedder_service.models.pipeline import FacePipeline
from embedder_service.models.session import RuntimeOptions
from embedder_service.models.single_shot import SingleShotDetector
from embedder_service.models.yunet import YunetDetector
from embedder_service.service import build_pipeline
from embedder_service.settings import EmbedderSettings
from tests.conftest import SHARED_DATA

# What test_mtcnn_parity allows against facenet-pytorch; an embedding's float noise.
MAX_PIXELS = 1.0
MAX_SCORE = 1e-3
MAX_EMBEDDING = 1e-5
PHOTOS = [
    "multi_face/compreface_016_8.jpg",
    "multi_face/compreface_015_6.jpg",
    "multi_face/compreface_010_2.jpg",
    "multi_face/deepface_selfie-many-people.jpg",
    "lfw_dev/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "lfw_dev/AJ_Cook/AJ_Cook_0001.jpg",
    "lfw_original_150px/Abdullah_Gul/Abdullah_Gul_0013.jpg",
    "no_face/dlib_dogs.jpg",
    "no_face/compreface_017_0.jpg",
]
# Generated from a group photo: a video frame, a thin strip, a photo above detect_max_side, a tiny one.
RESIZED = [(720, 1280), (97, 301), (1500, 2600), (30, 44)]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[np.ndarray]:
    loaded = [_load(shared_data / name) for name in PHOTOS]
    group = loaded[0]
    return loaded + [cv2.resize(group, (w, h), interpolation=cv2.INTER_AREA) for h, w in RESIZED]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    build_all(directory)
    return directory


def _pipeline(models_dir: Path, buckets: str) -> FacePipeline:
    settings = EmbedderSettings(
        models_dir=models_dir, shape_buckets=buckets, intra_op_threads=2, detect_max_side=2048, log_json=False
    )
    return build_pipeline(settings)


def _options(count: int) -> list[DetectionOptions]:
    """Each photo its own options, as requests batched together have."""
    choices = [DetectionOptions(20, 0.8), DetectionOptions(40, 0.9), DetectionOptions(16, 0.7, max_faces=2)]
    return [choices[i % len(choices)] for i in range(count)]


def test_buckets_keep_every_model_on_its_declared_shapes_with_unpadded_results(
    built: Path, photos: list[np.ndarray]
) -> None:
    plain, bucketed = _pipeline(built, "off"), _pipeline(built, "on")
    declared = [*bucketed.detector.shape_buckets(), *bucketed.encoder.shape_buckets()]
    bucketed.warm_up()
    for entry in declared:
        assert entry.model.input_shapes == set(entry.shapes), entry.model.model_path.name

    options = _options(len(photos))
    results = []
    for pipeline in (plain, bucketed):
        prepared = [
            pipeline.detection_input(photo, opts) for photo, opts in zip(photos, options, strict=True)
        ]
        detections = pipeline.detect_inputs(prepared, options)
        results.append((detections, pipeline.embed(photos, detections)))

    # Serving added no shape to those warm-up ran.
    for entry in declared:
        assert entry.model.input_shapes == set(entry.shapes), entry.model.model_path.name
    (expected, expected_vectors), (found, vectors) = results
    assert sum(map(len, expected)) >= 20
    assert len(set(map(len, expected))) >= 4  # face counts from none to many
    for faces, ours, wanted, our_vectors in zip(expected, found, expected_vectors, vectors, strict=True):
        assert len(ours) == len(faces)
        for face, our in zip(faces, ours, strict=True):
            assert np.abs(our.box - face.box).max() <= MAX_PIXELS
            assert np.abs(our.landmarks - face.landmarks).max() <= MAX_PIXELS
            assert abs(our.score - face.score) <= MAX_SCORE
        np.testing.assert_allclose(our_vectors, wanted, atol=MAX_EMBEDDING)


def test_a_batch_finds_what_each_photo_alone_finds(built: Path, photos: list[np.ndarray]) -> None:
    detector = _pipeline(built, "on").detector
    options = _options(len(photos))
    together = detector.detect_batch(photos, options)
    for photo, opts, faces in zip(photos, options, together, strict=True):
        alone = detector.detect(photo, opts.min_face_size, opts.threshold, opts.max_faces)
        assert [face.score for face in faces] == [face.score for face in alone]
        for face, single in zip(faces, alone, strict=True):
            np.testing.assert_array_equal(face.box, single.box)


def _level(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A normalised (3, height, width) P-Net input, as the detector makes one."""
    pixels = rng.integers(0, 256, (3, height, width)).astype(np.float32)
    return (pixels - np.float32(127.5)) * np.float32(0.0078125)


@pytest.mark.parametrize("side", [128, 256])
def test_packed_pnet_equals_pnet_on_each_level(tmp_path: Path, side: int) -> None:
    """Odd and even level sizes (odd ones have a partial ceil-mode pool window at their edge),
    several levels per canvas, several canvases: each level's cells read back from its place equal
    P-Net's on the level alone; without the mask the odd levels' edge cells would not."""
    nets = build_mtcnn_nets(locate_mtcnn_weights())
    plain = ort.InferenceSession(nets["pnet"].SerializeToString(), providers=["CPUExecutionProvider"])
    packed = ort.InferenceSession(nets["pnet_packed"].SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    sizes = [(12, 12), (13, 17), (25, 31), (40, 41), (57, 12), (100, 77), (121, 120), (33, 90)]
    levels = [_level(rng, height, width) for height, width in sizes]
    placements, count = pack(sizes, side)
    canvases = np.zeros((count, 4, side, side), np.float32)
    canvases[:, 3] = PACKED_MASK_OFF
    for level, place in zip(levels, placements, strict=True):
        _, height, width = level.shape
        canvases[place.canvas, :3, place.top : place.top + height, place.left : place.left + width] = level
        canvases[place.canvas, 3, place.top : place.top + height - 2, place.left : place.left + width - 2] = 0
    unmasked = canvases.copy()
    unmasked[:, 3] = 0
    outputs = packed.run(None, {"input": canvases})
    outputs_unmasked = packed.run(None, {"input": unmasked})
    worst = 0.0
    edge_changed = False
    for level, place in zip(levels, placements, strict=True):
        alone = plain.run(None, {"input": level[None]})
        out_h, out_w = alone[0].shape[2:]
        cells = np.s_[
            place.canvas,
            :,
            place.top // 2 : place.top // 2 + out_h,
            place.left // 2 : place.left // 2 + out_w,
        ]
        for ours, wanted, without_mask in zip(outputs, alone, outputs_unmasked, strict=True):
            worst = max(worst, float(np.abs(ours[cells] - wanted[0]).max()))
            edge_changed |= not np.allclose(without_mask[cells], wanted[0], atol=1e-4)
    print(
        f"\npacked P-Net vs P-Net per level, {len(sizes)} levels on {count} canvases: max |diff| {worst:.3g}"
    )
    assert worst <= 1e-5
    assert edge_changed


def _doubling(path: Path) -> OnnxModel:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "doubling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.float32(2).reshape(1, 1), "two")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return OnnxModel(path, RuntimeOptions(intra_op_threads=1))


def test_batch_ladder_pads_runs_and_drops_the_padding(tmp_path: Path) -> None:
    ladder = BatchLadder(12)
    assert ladder.sizes == (1, 2, 4, 8, 12)
    assert [ladder.bucket(count) for count in (1, 3, 8, 9, 12)] == [1, 4, 8, 12, 12]
    model = _doubling(tmp_path / "doubling.onnx")
    rows = np.arange(31 * 3, dtype=np.float32).reshape(31, 3)
    (doubled,) = ladder.run(model, rows, padded=True)
    np.testing.assert_array_equal(doubled, rows * 2)
    assert model.input_shapes == {(12, 3), (8, 3)}  # 12 + 12 + 7 rows, the last padded to 8
    (unpadded,) = ladder.run(model, rows[:5], padded=False)
    np.testing.assert_array_equal(unpadded, rows[:5] * 2)
    assert (5, 3) in model.input_shapes


def test_packing_keeps_levels_apart_at_even_offsets() -> None:
    rng = np.random.default_rng(5)
    sizes = [(int(h), int(w)) for h, w in rng.integers(12, 200, (60, 2))]
    placements, count = pack(sizes, 256)
    assert count < len(sizes) // 4
    for (height, width), place in zip(sizes, placements, strict=True):
        assert place.top % 2 == 0 and place.left % 2 == 0
        assert place.top + height <= 256 and place.left + width <= 256
    for (a, pa), (b, pb) in itertools.combinations(zip(sizes, placements, strict=True), 2):
        apart = pa.top + a[0] <= pb.top or pb.top + b[0] <= pa.top
        apart |= pa.left + a[1] <= pb.left or pb.left + b[1] <= pa.left
        assert pa.canvas != pb.canvas or apart
    with pytest.raises(ValueError, match="does not fit"):
        pack([(300, 20)], 256)


YUNET = SHARED_DATA.parent / "models" / "yunet" / "yunet_n_dynamic.onnx"


@pytest.mark.skipif(not YUNET.is_file(), reason="YuNet's file is not in ../shared/models")
def test_single_shot_batches_within_its_buckets(photos: list[np.ndarray]) -> None:
    detector: SingleShotDetector = YunetDetector(
        YUNET, RuntimeOptions(intra_op_threads=2, shape_buckets="on")
    )
    (declared,) = detector.shape_buckets()
    options = [DetectionOptions(10, 0.85)] * len(photos)
    together = detector.detect_batch(photos, options)
    assert detector.model.input_shapes <= set(declared.shapes)
    assert len(detector.model.input_shapes) == 1  # one padded batch: 13 photos, 16 canvases
    assert sum(map(len, together)) >= 15
    for photo, faces in zip(photos, together, strict=True):
        alone = detector.detect(photo, 10, 0.85)
        assert len(faces) == len(alone)
        for face, single in zip(faces, alone, strict=True):
            assert np.abs(face.box - single.box).max() <= 1e-3
