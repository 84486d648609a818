"""Health, metrics and the OpenAPI documentation."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.search.fakes import MATCH_THRESHOLD, photo


def test_health_metrics_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["problems"] == []
    assert health["embedder"] == {
        "ok": True,
        "model": "fake-embedder-v1",
        "dimension": 128,
        "match_threshold": MATCH_THRESHOLD,
        "normalized_threshold": None,
        "error": None,
    }
    # An empty store has no cohort to normalise scores with: searches rank by cosine.
    assert health["score_cohort"] == {
        "active": False,
        "enabled": True,
        "members": 0,
        "size": 1000,
        "minimum": 900,
    }
    assert health["index"]["backend"] == "embedded" and health["index"]["ok"]
    # By default uploads need 512 MiB free, and some space is held in reserve for deletes.
    assert health["disk"]["ok"] and health["disk"]["free_bytes"] >= health["disk"]["min_free_bytes"]
    assert health["disk"]["min_free_bytes"] == 512 * 1024 * 1024 and health["disk"]["reserve_bytes"] > 0
    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    spec = client.get("/openapi.json").json()
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations >= {
        ("/images", "post"),
        ("/images", "get"),
        ("/images/{image_id}", "get"),
        ("/images/{image_id}", "delete"),
        ("/images/{image_id}/file", "get"),
        ("/search", "post"),
        ("/collections", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    }
    search_doc = spec["paths"]["/search"]["post"]
    assert {"200", "409", "413", "415", "422", "502", "503"} <= set(search_doc["responses"])
    assert {p["name"] for p in search_doc["parameters"]} == {
        "k",
        "threshold",
        "collection",
        "source",
        "face_id",
    }
    assert client.get("/docs").status_code == 200


def test_embedder_down_is_a_503_and_degraded_health(make_settings: Callable[..., SearchSettings]) -> None:
    # Port 9 (discard) has no listener here: connections are refused.
    settings = make_settings(embedder={"url": "http://127.0.0.1:9", "retries": 1})
    with TestClient(create_app(settings)) as client:
        response = client.post("/search", files={"image": ("q.png", photo("vic"), "image/png")})
        assert response.status_code == 503
        assert response.json()["detail"].startswith("the embedder is unavailable (2 attempts; last: ")
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and not health.json()["embedder"]["ok"]
        assert health.json()["embedder"]["error"]
        assert health.json()["problems"] == [f"embedder: {health.json()['embedder']['error']}"]
        # The internal address stays in the operator's log, out of public answers.
        assert "127.0.0.1:9" not in response.text and "127.0.0.1:9" not in health.text
