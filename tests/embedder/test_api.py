"""The embedder over HTTP, with the real models, on real photos from ../shared/data.

What the real models add to tests/embedder/api (the API over a stand-in detector): real faces
found, embedded and compared, EXIF orientation, and the built models' own manifest.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from embedder_service.main import create_app
from embedder_service.settings import EmbedderSettings


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    settings = EmbedderSettings(models_dir=models_dir, log_json=False)
    # 127.0.0.1: a Host the embedder serves by default (EMBEDDER_ALLOWED_HOSTS).
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lfw_photo(shared_data: Path) -> bytes:
    return (shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()


def post(client: TestClient, *images: tuple[str, bytes], **params: object) -> dict:
    files = [("image", (name, data, "application/octet-stream")) for name, data in images]
    response = client.post("/faces", files=files, params=params)
    return {"status": response.status_code, "body": response.json()}


def test_one_face_with_unit_embedding(client: TestClient, lfw_photo: bytes) -> None:
    result = post(client, ("a.jpg", lfw_photo))
    assert result["status"] == 200
    assert (result["body"]["model"], result["body"]["dimension"]) == ("dlib_resnet_v1", 128)
    assert result["body"]["match_threshold"] == 0.91
    (image,) = result["body"]["images"]
    assert (image["width"], image["height"]) == (250, 250)
    (face,) = image["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 50 < x1 < x2 < 200 and 40 < y1 < y2 < 220  # LFW's deep-funnelled face sits in the centre
    assert face["score"] > 0.9
    assert len(face["landmarks"]) == 5
    left_eye, right_eye = face["landmarks"][0], face["landmarks"][1]
    assert left_eye[0] < right_eye[0]
    vector = np.array(face["embedding"])
    assert vector.shape == (128,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5


def test_several_images_one_entry_each_in_order(
    client: TestClient, shared_data: Path, lfw_photo: bytes
) -> None:
    group = sorted((shared_data / "multi_face").glob("compreface_*_4.jpg"))[0].read_bytes()
    nothing = (shared_data / "no_face" / "dlib_dogs.jpg").read_bytes()
    result = post(client, ("group.jpg", group), ("none.jpg", nothing), ("one.jpg", lfw_photo))
    assert result["status"] == 200
    counts = [len(image["faces"]) for image in result["body"]["images"]]
    assert counts == [4, 0, 1]


def test_same_face_same_person_close_different_person_far(client: TestClient, shared_data: Path) -> None:
    def embedding(path: Path) -> np.ndarray:
        return np.array(
            post(client, (path.name, path.read_bytes()))["body"]["images"][0]["faces"][0]["embedding"]
        )

    gul = sorted((shared_data / "lfw_dev" / "Abdullah_Gul").glob("*.jpg"))
    a1, a2 = embedding(gul[0]), embedding(gul[1])
    other = embedding(shared_data / "lfw_dev" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    threshold = post(client, (gul[0].name, gul[0].read_bytes()))["body"]["match_threshold"]
    assert a1 @ a2 > threshold > a1 @ other


def test_rotated_phone_photo_keeps_its_face(client: TestClient, lfw_photo: bytes) -> None:
    rotated = Image.open(io.BytesIO(lfw_photo)).transpose(Image.Transpose.ROTATE_270)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with the tag that tells viewers to turn it back
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif, quality=95)
    (image,) = post(client, ("phone.jpg", buffer.getvalue()))["body"]["images"]
    assert len(image["faces"]) == 1


def test_max_faces_keeps_the_most_probable(client: TestClient, shared_data: Path) -> None:
    group = sorted((shared_data / "multi_face").glob("compreface_*_4.jpg"))[0].read_bytes()
    every = [face["score"] for face in post(client, ("g.jpg", group))["body"]["images"][0]["faces"]]
    kept = [
        face["score"] for face in post(client, ("g.jpg", group), max_faces=2)["body"]["images"][0]["faces"]
    ]
    assert kept == sorted(every, reverse=True)[:2]


def test_models_report_checksums_and_providers(client: TestClient, models_dir: Path) -> None:
    body = client.get("/models").json()
    assert body["embedding_model"] == "dlib_resnet_v1" and body["embedding_dimension"] == 128
    assert body["match_threshold"] == 0.91  # as `make eval` calibrated it
    assert {model["task"] for model in body["models"]} == {"detection", "recognition"}
    for model in body["models"]:
        assert model["checksum"] == hashlib.sha256((models_dir / model["file"]).read_bytes()).hexdigest()
        assert "CPUExecutionProvider" in model["providers"]


def test_models_list_the_nets_mtcnn_runs_and_health_their_common_providers(client: TestClient) -> None:
    """`make models` builds P-Net twice (pnet_packed.onnx for shape buckets): only the one MTCNN
    opens is listed, with R-, O-Net and the encoder; /healthz answers what all four run on."""
    models = client.get("/models").json()["models"]
    files = {model["file"] for model in models}
    assert len(files) == 4 and {"rnet.onnx", "onet.onnx", "dlib_resnet_v1.onnx"} < files
    assert len(files & {"pnet.onnx", "pnet_packed.onnx"}) == 1
    health = client.get("/healthz").json()["providers"]
    assert health == [name for name in models[0]["providers"] if all(name in m["providers"] for m in models)]
    assert "CPUExecutionProvider" in health


def test_16_and_32_bit_grey_versions_of_a_photo_still_show_its_face(
    client: TestClient, lfw_photo: bytes
) -> None:
    """Issue 10: a 16-bit grey PNG or 32-bit int TIFF decoded washed out (mean 242) and showed 0 faces."""
    grey = np.asarray(Image.open(io.BytesIO(lfw_photo)).convert("L"))
    versions = {}
    for name, image in [
        ("grey8.png", Image.fromarray(grey)),
        ("grey16.png", Image.fromarray(grey.astype(np.uint16) * 257)),
        ("grey32.tif", Image.fromarray(np.rint(grey * ((2**31 - 1) / 255)).astype(np.int32))),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if name.endswith(".png") else "TIFF")
        versions[name] = buffer.getvalue()
    assert Image.open(io.BytesIO(versions["grey16.png"])).mode == "I;16"
    assert Image.open(io.BytesIO(versions["grey32.tif"])).mode == "I"
    boxes = {}
    for name, data in versions.items():
        result = post(client, (name, data), embeddings=False)
        assert result["status"] == 200
        (face,) = result["body"]["images"][0]["faces"]
        boxes[name] = np.array(face["box"])
    for name in ("grey16.png", "grey32.tif"):
        assert np.abs(boxes[name] - boxes["grey8.png"]).max() < 2, name
