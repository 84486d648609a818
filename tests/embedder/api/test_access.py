"""The embedder reachable only by the search service: its key (EMBEDDER_API_KEY), its Host list,
and its refusal to serve other machines without a key."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from embedder_service.models.manifest import Manifest
from embedder_service.settings import EmbedderSettings
from search_service.clients.embedder import EmbedderClient
from search_service.domain import Upload
from search_service.errors import ServiceError
from search_service.settings import EmbedderClientSettings
from tests.embedder.api.conftest import DIMENSION, AppFactory, photo, run_embedder_process

KEY = "embedder-key-0123456789abcdef"


@pytest.fixture
def keyed(make_client: AppFactory) -> TestClient:
    return make_client(api_key=KEY)


def post_photo(client: TestClient, **headers: str) -> httpx.Response:
    return client.post("/faces", files=[("image", ("a.jpg", photo(), "image/jpeg"))], headers=headers)


def test_with_a_key_set_every_route_but_health_needs_it(keyed: TestClient) -> None:
    for answer in [post_photo(keyed), keyed.get("/models"), keyed.get("/metrics")]:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "an API key is required" in answer.json()["detail"]
    for wrong in [KEY[:-1], KEY + "x", "x" * len(KEY)]:
        assert post_photo(keyed, Authorization=f"Bearer {wrong}").json() == {"detail": "unknown API key"}
    assert keyed.get("/healthz").json()["status"] == "ok"
    assert keyed.get("/openapi.json").status_code == 200

    answer = post_photo(keyed, Authorization=f"Bearer {KEY}")
    assert answer.status_code == 200 and answer.json()["images"][0]["faces"]
    assert post_photo(keyed, **{"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_without_a_key_set_loopback_callers_need_none(client: TestClient) -> None:
    assert post_photo(client).status_code == 200


def test_another_host_is_a_400(client: TestClient) -> None:
    answer = post_photo(client, Host="attacker.example")
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "this Host is not served here; allowed hosts are set by EMBEDDER_ALLOWED_HOSTS"
    }
    assert client.get("/healthz", headers={"Host": "10.1.2.3:8001"}).status_code == 200


def test_the_compose_name_is_served_when_listed(make_client: AppFactory) -> None:
    client = make_client(allowed_hosts="embedder,127.0.0.1")
    assert post_photo(client, Host="embedder:8001").status_code == 200
    assert post_photo(client, Host="testserver").status_code == 400


def test_the_search_service_client_sends_the_key(keyed: TestClient) -> None:
    """The search service's own embedder client, in process, against the keyed embedder."""
    data = photo()
    upload = Upload("a.jpg", data, hashlib.sha256(data).hexdigest(), "image/jpeg")

    async def detect(api_key: str | None) -> int:
        settings = EmbedderClientSettings(url="http://127.0.0.1:8001", retries=0)
        settings = settings.model_copy(update={"api_key": None if api_key is None else SecretStr(api_key)})
        client = EmbedderClient(settings, transport=httpx.ASGITransport(keyed.app))
        try:
            detection = await client.detect([upload])
        finally:
            await client.aclose()
        return len(detection.images[0].faces[0].embedding)

    assert asyncio.run(detect(KEY)) == DIMENSION
    with pytest.raises(ServiceError, match="401"):
        asyncio.run(detect(None))


def test_off_loopback_without_a_key_the_settings_refuse(tiny_models: tuple[Path, Manifest]) -> None:
    directory, _ = tiny_models
    with pytest.raises(ValidationError, match=r"EMBEDDER_HOST=0\.0\.0\.0 is reachable from other machines"):
        EmbedderSettings(models_dir=directory, host="0.0.0.0", api_key="")
    assert EmbedderSettings(models_dir=directory, host="0.0.0.0", api_key=KEY).api_key is not None
    with pytest.raises(ValidationError, match="at least 16 characters"):
        EmbedderSettings(models_dir=directory, api_key="short")


def test_python_m_embedder_service_refuses_to_serve_all_interfaces_without_a_key(tmp_path: Path) -> None:
    result = run_embedder_process(tmp_path, {"EMBEDDER_HOST": "0.0.0.0"}, timeout=60)
    assert result.returncode != 0
    assert "embedder not started" in result.stderr
    assert "EMBEDDER_HOST=0.0.0.0 is reachable from other machines: set EMBEDDER_API_KEY" in result.stderr
