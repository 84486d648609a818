"""The pluggable detectors: YuNet and SCRFD beside MTCNN, on real photos and real model files.

YuNet's decoding is checked against OpenCV's own ``cv2.FaceDetectorYN``, SCRFD's against the
reference code of the PyPI sdist its file ships in; every detector answers MTCNN's landmark
order; the pipeline shrinks a large photo once, to the detector's own side; the API answers
faces with embeddings on YuNet, and the licences of the models in use; the manifest every one's.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from embedder_service.build.__main__ import build_all, main
from embedder_service.build.detectors import SCRFD, YUNET, SourceError, fetch
from embedder_service.main import create_app
from embedder_service.models.detection import DetectionOptions
from embedder_service.models.detector import Detection
from embedder_service.models.detectors import DetectorMissingError, build_detector
from embedder_service.models.manifest import load_manifest
from embedder_service.models.pipeline import FaceDetector
from embedder_service.models.session import RuntimeOptions
from embedder_service.service import build_pipeline
from embedder_service.settings import OTHER_DETECTOR_THRESHOLDS, EmbedderSettings
from tests.conftest import SHARED_DATA

SHARED_MODELS = SHARED_DATA.parent / "models"
# Upright faces of several sizes: group photos, LFW thumbnails, a selfie crowd.
PHOTOS = [
    "multi_face/azure_detection4.jpg",
    "multi_face/azure_detection5.jpg",
    "multi_face/compreface_014_5.jpg",
    "multi_face/compreface_016_8.jpg",
    "multi_face/face_recognition_two_people.jpg",
    "multi_face/mtcnn_office1.jpg",
    "lfw_dev/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "lfw_dev/AJ_Cook/AJ_Cook_0001.jpg",
]


def _photo(shared_data: Path, name: str, longest: int | None = 640) -> np.ndarray:
    """The photo upright, RGB, area-scaled to ``longest`` pixels on its longer side if longer."""
    with Image.open(shared_data / name) as image:
        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    height, width = rgb.shape[:2]
    if longest is None or max(height, width) <= longest:
        return rgb
    factor = longest / max(height, width)
    size = (round(width * factor), round(height * factor))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def yunet_file() -> Path:
    path = SHARED_MODELS / "yunet" / "yunet_n_dynamic.onnx"
    if not path.is_file():
        pytest.skip(f"YuNet's file not found at {path} (../shared/models)")
    return path


@pytest.fixture(scope="session")
def scrfd_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist scrfd==0.3.0 from PyPI, as `make models DETECTORS=scrfd` fetches it."""
    directory = tmp_path_factory.mktemp("scrfd_sdist")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    done = subprocess.run([*command, "-d", str(directory), "scrfd==0.3.0"], capture_output=True, check=False)
    archive = directory / "scrfd-0.3.0.tar.gz"
    if done.returncode or not archive.is_file():
        pytest.skip(f"cannot download the scrfd sdist from PyPI: {done.stderr.decode()[-300:]}")
    return archive


@pytest.fixture(scope="session")
def built(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, yunet_file: Path, scrfd_sdist: Path
) -> Path:
    """`make models DETECTORS=yunet,scrfd` from local copies: MTCNN, dlib's ResNet, YuNet, SCRFD."""
    directory = tmp_path_factory.mktemp("models_with_detectors")
    build_all(directory, {"yunet": yunet_file, "scrfd": scrfd_sdist})
    return directory


def _detector(built: Path, name: str) -> FaceDetector:
    return build_detector(name, built, load_manifest(built), RuntimeOptions(intra_op_threads=2))


@pytest.fixture(scope="session")
def scrfd_reference(scrfd_sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The sdist's own Python implementation, imported from the unpacked archive (test-only)."""
    directory = tmp_path_factory.mktemp("scrfd_src")
    with tarfile.open(scrfd_sdist) as tar:
        tar.extractall(directory, filter="data")
    sys.path.insert(0, str(directory / "scrfd-0.3.0" / "src"))
    try:
        yield importlib.import_module("scrfd")
    finally:
        sys.path.remove(str(directory / "scrfd-0.3.0" / "src"))


def _assert_same_faces(ours: list[Detection], theirs: list[tuple[np.ndarray, float, np.ndarray]]) -> None:
    """Same faces, in score order: boxes and landmarks within a pixel, scores within 1e-3."""
    assert len(ours) == len(theirs)
    ranked = sorted(theirs, key=lambda face: -face[1])
    for face, (box, score, landmarks) in zip(ours, ranked, strict=True):
        np.testing.assert_allclose(face.box, box, atol=1.0)
        np.testing.assert_allclose(face.landmarks, landmarks, atol=1.0)
        assert abs(face.score - score) < 1e-3


@pytest.mark.parametrize("name", PHOTOS)
def test_yunet_decodes_as_opencv_does(shared_data: Path, built: Path, yunet_file: Path, name: str) -> None:
    rgb = _photo(shared_data, name)
    height, width = rgb.shape[:2]
    threshold = 0.6
    ours = _detector(built, "yunet").detect(rgb, min_face_size=1, threshold=threshold)
    opencv = cv2.FaceDetectorYN.create(str(yunet_file), "", (width, height), threshold, 0.3, 5000)
    _, rows = opencv.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    rows = np.zeros((0, 15)) if rows is None else rows
    theirs = [
        (np.concatenate([row[:2], row[:2] + row[2:4]]), float(row[14]), row[4:14].reshape(5, 2))
        for row in rows
    ]
    assert ours, f"no face found on {name}"
    _assert_same_faces(ours, theirs)


@pytest.mark.parametrize("name", [name for name in PHOTOS if "lfw" not in name])
def test_scrfd_decodes_as_its_sdist_does(
    shared_data: Path, built: Path, scrfd_reference: ModuleType, name: str
) -> None:
    rgb = _photo(shared_data, name)
    height, width = rgb.shape[:2]
    if height > width:
        pytest.skip("the sdist rounds a portrait photo's width down a pixel: a different input")
    threshold = 0.5
    ours = _detector(built, "scrfd").detect(rgb, min_face_size=1, threshold=threshold)
    reference = scrfd_reference.SCRFD.from_path(str(built / SCRFD.file))
    found = reference.detect(Image.fromarray(rgb), scrfd_reference.Threshold(probability=threshold))
    theirs = [
        (
            np.array([f.bbox.upper_left.x, f.bbox.upper_left.y, f.bbox.lower_right.x, f.bbox.lower_right.y]),
            f.probability,
            np.array([[p.x, p.y] for p in (k.left_eye, k.right_eye, k.nose, k.left_mouth, k.right_mouth)]),
        )
        for f in found
        for k in [f.keypoints]
    ]
    assert ours, f"no face found on {name}"
    _assert_same_faces(ours, theirs)


@pytest.mark.parametrize("detector", ["mtcnn", "yunet", "scrfd"])
def test_every_detector_answers_mtcnns_landmark_order(shared_data: Path, built: Path, detector: str) -> None:
    """Image-left eye, image-right eye, nose, mouth left, mouth right, on upright LFW faces."""
    model = _detector(built, detector)
    for path in sorted((shared_data / "lfw_dev").glob("A*/*_0001.jpg"))[:10]:
        faces = model.detect(_photo(shared_data, str(path)), min_face_size=20, threshold=0.5)
        assert faces, path.name
        face = max(faces, key=lambda found: found.score)
        left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0], path.name
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1]), path.name
        x1, y1, x2, y2 = face.box
        inside = (face.landmarks > [x1, y1]) & (face.landmarks < [x2, y2])
        assert inside.all(), path.name


@pytest.mark.parametrize("detector", ["yunet", "scrfd"])
def test_large_photos_answer_in_their_own_pixels(shared_data: Path, built: Path, detector: str) -> None:
    """A photo over 640 px is detected on a smaller copy; the faces come back in its pixels."""
    small = _photo(shared_data, "multi_face/azure_detection4.jpg")
    large = cv2.resize(small, (small.shape[1] * 3, small.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    model = _detector(built, detector)
    on_small = model.detect(small, min_face_size=20, threshold=0.5)
    on_large = model.detect(large, min_face_size=20, threshold=0.5)
    assert len(on_small) == len(on_large) >= 2
    for face, scaled in zip(
        sorted(on_small, key=lambda f: f.box[0]), sorted(on_large, key=lambda f: f.box[0]), strict=True
    ):
        np.testing.assert_allclose(scaled.box, face.box * 3, atol=6)
        np.testing.assert_allclose(scaled.landmarks, face.landmarks * 3, atol=6)


@pytest.mark.parametrize("detector", ["yunet", "scrfd"])
def test_the_pipeline_shrinks_a_large_photo_once_to_the_detectors_side(
    shared_data: Path, built: Path, detector: str
) -> None:
    """A photo over 640 px is shrunk by the pipeline straight to 640, not first to detect_max_side
    (2048); the faces are those the detector finds on the photo itself. Its cost is the detector's
    one canvas, whatever the smallest face asked for."""
    small = _photo(shared_data, "multi_face/azure_detection4.jpg")
    large = cv2.resize(small, (small.shape[1] * 3, small.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    settings = EmbedderSettings(models_dir=built, detector=detector, log_json=False, intra_op_threads=2)
    pipeline = build_pipeline(settings)
    options = DetectionOptions(min_face_size=20, threshold=0.5)
    prepared = pipeline.detection_input(large, options)
    assert max(prepared.pixels.shape[:2]) == 640
    larger_faces = pipeline.detection_input(large, DetectionOptions(min_face_size=60, threshold=0.5))
    assert prepared.work == larger_faces.work <= 640 * 640
    ours = pipeline.detect(large, options)
    theirs = pipeline.detector.detect(large, options.min_face_size, options.threshold)
    assert len(ours) == len(theirs) >= 2
    for face, direct in zip(ours, theirs, strict=True):
        # The pipeline maps pixel centres back (cv2.resize's convention), the detector corners: 1 px apart.
        np.testing.assert_allclose(face.box, direct.box, atol=1.5)
        np.testing.assert_allclose(face.landmarks, direct.landmarks, atol=1.5)


def test_min_face_size_and_max_faces_hold(shared_data: Path, built: Path) -> None:
    rgb = _photo(shared_data, "multi_face/compreface_016_8.jpg")
    model = _detector(built, "yunet")
    every = model.detect(rgb, min_face_size=1, threshold=0.6)
    sides = [max(face.box[2] - face.box[0], face.box[3] - face.box[1]) for face in every]
    cut = float(np.median(sides))
    large = model.detect(rgb, min_face_size=int(np.ceil(cut)), threshold=0.6)
    assert 0 < len(large) < len(every)
    assert all(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= int(np.ceil(cut)) for f in large)
    top = model.detect(rgb, min_face_size=1, threshold=0.6, max_faces=2)
    assert [face.score for face in top] == [face.score for face in every[:2]]


@pytest.fixture(scope="module")
def yunet_client(built: Path) -> Iterator[TestClient]:
    settings = EmbedderSettings(models_dir=built, detector="yunet", log_json=False)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def test_the_api_on_yunet_answers_faces_with_embeddings(shared_data: Path, yunet_client: TestClient) -> None:
    photo = (shared_data / "multi_face" / "azure_detection5.jpg").read_bytes()
    response = yunet_client.post("/faces", files=[("image", ("group.jpg", photo, "image/jpeg"))])
    assert response.status_code == 200
    body = response.json()
    (image,) = body["images"]
    assert len(image["faces"]) == 3
    for face in image["faces"]:
        assert face["score"] >= OTHER_DETECTOR_THRESHOLDS["yunet"]  # YuNet's own cut-off, not MTCNN's
        assert len(face["landmarks"]) == 5
        assert abs(np.linalg.norm(face["embedding"]) - 1) < 1e-5 and len(face["embedding"]) == 128


def test_models_states_the_detector_and_the_licences_of_the_models_in_use(yunet_client: TestClient) -> None:
    """MTCNN's nets and SCRFD are built too, but not run: GET /models leaves them out."""
    body = yunet_client.get("/models").json()
    assert body["detector"] == "yunet"
    licences = {model["name"]: model["licence"] for model in body["models"]}
    assert licences.keys() == {"yunet", "dlib_resnet_v1"}
    assert licences["dlib_resnet_v1"].startswith("CC0")
    assert licences["yunet"].startswith("Apache-2.0")
    assert yunet_client.get("/healthz").json()["providers"] == ["CPUExecutionProvider"]


def test_the_manifest_states_every_licence(built: Path) -> None:
    licences = {model.name: model.licence for model in load_manifest(built).models}
    assert licences["mtcnn_pnet"].startswith("MIT")
    assert licences["dlib_resnet_v1"].startswith("CC0")
    assert licences["yunet"].startswith("Apache-2.0")
    assert "non-commercial" in licences["scrfd"]


def test_a_detector_not_built_is_refused_with_what_to_do(tmp_path: Path) -> None:
    build_all(tmp_path)
    with pytest.raises(DetectorMissingError, match=r"`make models DETECTORS=scrfd`"):
        build_detector("scrfd", tmp_path, load_manifest(tmp_path), RuntimeOptions())


def test_a_file_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    impostor = tmp_path / "yunet.onnx"
    impostor.write_bytes(b"not yunet")
    with pytest.raises(SourceError, match=r"sha256 is [0-9a-f]{64}, not the pinned 104ee26c"):
        fetch(YUNET, impostor)
    archive = tmp_path / "scrfd-0.3.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("scrfd-0.3.0/README.md")
        tar.addfile(info, io.BytesIO())
    with pytest.raises(SourceError, match=r"holds no file scrfd-0\.3\.0/models/scrfd\.onnx"):
        fetch(SCRFD, archive)


def test_the_build_command_refuses_a_wrong_file_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impostor = tmp_path / "yunet.onnx"
    impostor.write_bytes(b"not yunet")
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--models-dir", str(tmp_path / "models"), "--detectors", "yunet", "--yunet-file", str(impostor)]
        )
    assert exit_info.value.code == 2
    assert "not the pinned" in capsys.readouterr().err
    assert not (tmp_path / "models" / "manifest.json").exists()


@pytest.mark.parametrize("detector", ["yunet", "scrfd"])
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((1, 3000, 3), 200, np.uint8),
        np.full((3000, 2), 90, np.uint8),
        np.zeros((33, 65, 4), np.uint8),
    ],
    ids=["1x1", "1x3000", "grey 3000x2", "rgba"],
)
def test_degenerate_images_have_no_faces(built: Path, detector: str, image: np.ndarray) -> None:
    assert _detector(built, detector).detect(image, min_face_size=20, threshold=0.5) == []
