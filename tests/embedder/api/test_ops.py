"""GET /models, /healthz, /metrics and the OpenAPI document, over HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embedder_service.main import create_app
from embedder_service.models.manifest import Manifest
from embedder_service.settings import EmbedderSettings
from tests.embedder.api.conftest import DIMENSION, MATCH_THRESHOLD, AppFactory, photo


def test_models_report_the_encoder_and_its_match_threshold(
    client: TestClient, tiny_models: tuple[Path, Manifest]
) -> None:
    directory, _ = tiny_models
    body = client.get("/models").json()
    assert body["embedding_model"] == "tiny_v1"
    assert body["embedding_dimension"] == DIMENSION
    assert body["match_threshold"] == MATCH_THRESHOLD
    assert (body["alignment"], body["flip_augment"]) == ("five_point", True)
    models = {model["task"]: model for model in body["models"]}
    encoder, detector = models["recognition"], models["detection"]
    assert encoder["checksum"] == hashlib.sha256((directory / encoder["file"]).read_bytes()).hexdigest()
    assert (encoder["dimension"], encoder["match_threshold"]) == (DIMENSION, MATCH_THRESHOLD)
    assert (detector["dimension"], detector["match_threshold"]) == (None, None)
    assert encoder["providers"] == detector["providers"] == ["CPUExecutionProvider"]


def test_models_list_only_the_models_in_use(client: TestClient) -> None:
    """The manifest also records a detector that is built but not selected: it is left out."""
    files = [model["file"] for model in client.get("/models").json()["models"]]
    assert sorted(files) == ["fake_detector.onnx", "tiny_v1.onnx"]


def test_models_report_the_pipeline_settings(make_client: AppFactory) -> None:
    body = make_client(alignment="eyes_nose", flip_augment=False).get("/models").json()
    assert (body["alignment"], body["flip_augment"]) == ("eyes_nose", False)


def test_health_once_started(client: TestClient) -> None:
    assert client.get("/healthz").json() == {
        "status": "ok",
        "models_loaded": True,
        "providers": ["CPUExecutionProvider"],
    }


def test_before_start_up_health_says_starting_and_faces_is_503(tiny_models: tuple[Path, Manifest]) -> None:
    directory, _ = tiny_models
    # Without its lifespan (no `with`), the app never loads a service.
    client = TestClient(create_app(EmbedderSettings(models_dir=directory, log_json=False)))
    assert client.get("/healthz").json() == {"status": "starting", "models_loaded": False, "providers": []}
    response = client.post("/faces", files=[("image", ("a.jpg", photo(), "image/jpeg"))])
    assert response.status_code == 503
    assert response.json()["detail"] == "models are not loaded yet"


def test_metrics_count_requests_and_model_time(client: TestClient) -> None:
    client.post("/faces", files=[("image", ("a.jpg", photo(), "image/jpeg"))])
    client.post("/faces", files=[("image", ("bad.jpg", b"nope", "image/jpeg"))])
    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/faces",status="200"}' in metrics
    assert 'http_requests_total{method="POST",route="/faces",status="415"}' in metrics
    for family in (
        "embedder_model_seconds_bucket",
        "embedder_faces_per_image_count",
        "embedder_image_megapixels",
    ):
        assert family in metrics


def test_openapi_documents_every_endpoint_and_the_answer(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert {"/faces", "/models", "/healthz", "/metrics"} <= set(document["paths"])
    answer = document["components"]["schemas"]["FacesResponse"]
    assert {"model", "dimension", "match_threshold", "images"} <= set(answer["required"])


@pytest.mark.parametrize(
    ("parameter", "setting"),
    [
        ("min_face_size", "EMBEDDER_MIN_FACE_SIZE"),
        ("threshold", "EMBEDDER_DETECTION_THRESHOLD"),
        ("max_faces", "EMBEDDER_MAX_FACES"),
    ],
)
def test_openapi_says_where_option_defaults_come_from(
    client: TestClient, parameter: str, setting: str
) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/faces"]["post"]["parameters"]
    (described,) = [item for item in parameters if item["name"] == parameter]
    assert not described["required"]
    assert "default" not in described["schema"]
    assert f"default: the service's settings ({setting})" in described["description"]
