"""Access control (issue 10, row 3): API keys and scopes, collections, Host, Origin, CORS, start-up.

Row 3 as found: with no credentials anyone who reached the port could read or delete everything,
`Host: attacker.example` was served, and a cross-site form POST was stored. Each test below makes
that request again and checks the answer and the store afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from pytest_httpserver import HeaderValueMatcher, HTTPServer
from starlette.types import Message

from search_service.main import create_app
from search_service.settings import AccessSettings, SearchSettings
from tests.conftest import REPO_ROOT
from tests.search.api.helpers import ingest, search
from tests.search.fakes import FakeEmbedder, photo
from tests.search.video.conftest import write_clip

READ_KEY = "read-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
FAMILY_KEY = "family-key-0123456789abcdef"  # write, only the collection "family"
TWO_KEY = "two-key-0123456789abcdef"  # read, "family" and "friends"
KEYS = f"{READ_KEY}:read,{WRITE_KEY}:write,{FAMILY_KEY}:write:family,{TWO_KEY}:read:family|friends"
EMBEDDER_KEY = "embedder-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_settings: Callable[..., SearchSettings]) -> Iterator[TestClient]:
    """The service with the four keys above; the client sends none by itself."""
    with TestClient(create_app(make_settings(access=AccessSettings(api_keys=KEYS)))) as client:
        yield client


def files(data: bytes) -> dict[str, Any]:
    return {"image": ("p.png", data, "image/png")}


def ingest_as(client: TestClient, key: str, data: bytes, **form: str) -> dict[str, Any]:
    """POST /images of one photo with ``key``; the stored image."""
    response = client.post("/images", files=files(data), data=form, headers=bearer(key))
    assert response.status_code == 200, response.text
    image: dict[str, Any] = response.json()["images"][0]
    return image


def stored(client: TestClient) -> list[int]:
    """Ids of every stored photo, read with the write key."""
    return [image["id"] for image in client.get("/images", headers=bearer(WRITE_KEY)).json()["images"]]


def test_no_credentials_is_a_401_and_nothing_changes(keyed: TestClient) -> None:
    image_id = ingest_as(keyed, WRITE_KEY, photo("ann"))["id"]
    for method, path in [
        ("GET", "/images"),
        ("GET", f"/images/{image_id}"),
        ("GET", f"/images/{image_id}/file"),
        ("DELETE", f"/images/{image_id}"),
        ("GET", "/collections"),
        ("GET", "/metrics"),
        ("GET", "/jobs/1"),
        ("GET", "/videos"),
    ]:
        answer = keyed.request(method, path)
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "API key" in answer.json()["detail"]
    assert keyed.post("/search", files=files(photo("ann"))).status_code == 401
    assert keyed.post("/images", files=files(photo("bob"))).status_code == 401
    assert stored(keyed) == [image_id]
    # Open whatever the keys: the probe, and the API's description.
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/openapi.json").status_code == 200
    assert keyed.get("/docs").status_code == 200


def test_a_key_is_sent_either_way_and_must_match_whole(keyed: TestClient) -> None:
    assert keyed.get("/images", headers=bearer(READ_KEY)).status_code == 200
    assert keyed.get("/images", headers={"X-API-Key": READ_KEY}).status_code == 200
    # Its prefixes, extensions and look-alikes are no key (compared whole, in constant time).
    for wrong in [READ_KEY[:-1], READ_KEY + "x", READ_KEY.upper(), "x" * len(READ_KEY), READ_KEY[:8]]:
        answer = keyed.get("/images", headers={"X-API-Key": wrong})
        assert (answer.status_code, answer.json()) == (401, {"detail": "unknown API key"}), wrong
    assert keyed.get("/images", headers={"X-API-Key": ""}).status_code == 401
    assert keyed.get("/images", headers={"Authorization": f"Basic {READ_KEY}"}).status_code == 401


def test_a_read_key_reads_and_searches_but_cannot_write_or_delete(keyed: TestClient) -> None:
    image_id = ingest_as(keyed, WRITE_KEY, photo("ann"))["id"]
    read = bearer(READ_KEY)
    assert keyed.get(f"/images/{image_id}", headers=read).status_code == 200
    assert keyed.get(f"/images/{image_id}/file", headers=read).content == photo("ann")
    assert "http_requests_total" in keyed.get("/metrics", headers=read).text
    hits = keyed.post("/search", files=files(photo("ann", variant=1)), headers=read).json()
    assert [hit["id"] for hit in hits["faces"][0]["hits"]] == [image_id]

    refused = keyed.delete(f"/images/{image_id}", headers=read)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this API key may read but not write"}
    assert keyed.post("/images", files=files(photo("bob")), headers=read).status_code == 403
    # The store is intact: the photo, its file and its face in search.
    assert stored(keyed) == [image_id]
    assert keyed.get(f"/images/{image_id}/file", headers=read).status_code == 200
    hits = keyed.post("/search", files=files(photo("ann", variant=1)), headers=read).json()
    assert [hit["id"] for hit in hits["faces"][0]["hits"]] == [image_id]

    assert keyed.delete(f"/images/{image_id}", headers=bearer(WRITE_KEY)).status_code == 204
    assert stored(keyed) == []


def test_a_key_limited_to_a_collection_sees_and_changes_only_that_one(keyed: TestClient) -> None:
    family = bearer(FAMILY_KEY)
    # A photo of ann in "work", stored with the unlimited key.
    work_id = ingest_as(keyed, WRITE_KEY, photo("ann"), collection="work")["id"]
    # Naming no collection, the family key's upload goes to its only collection.
    mine = ingest_as(keyed, FAMILY_KEY, photo("ann", variant=2))
    assert mine["collection"] == "family"
    refused = keyed.post(
        "/images", files=files(photo("ann", variant=3)), data={"collection": "work"}, headers=family
    )
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this API key may not use the collection 'work'"}

    # Search, listings and collections show family only, even asked for nothing in particular.
    hits = keyed.post("/search", files=files(photo("ann", variant=1)), headers=family).json()["faces"][0][
        "hits"
    ]
    assert [hit["id"] for hit in hits] == [mine["id"]]
    assert [image["id"] for image in keyed.get("/images", headers=family).json()["images"]] == [mine["id"]]
    assert keyed.get("/images", params={"collection": "work"}, headers=family).status_code == 403
    assert [entry["name"] for entry in keyed.get("/collections", headers=family).json()["collections"]] == [
        "family"
    ]

    # By id, a record of another collection does not exist for this key: the same 404 as a missing one.
    missing = keyed.get("/images/999999", headers=family)
    # What is no id is left to the route's own validation.
    for bad in ["²", "0", "abc", str(2**63)]:
        assert keyed.get(f"/images/{bad}", headers=family).status_code == 422, bad
    for method, path in [
        ("GET", f"/images/{work_id}"),
        ("GET", f"/images/{work_id}/file"),
        ("DELETE", f"/images/{work_id}"),
    ]:
        answer = keyed.request(method, path, headers=family)
        assert answer.status_code == 404
        assert answer.json() == {"detail": f"no image with id {work_id}"}
    assert missing.json() == {"detail": "no image with id 999999"}
    assert sorted(stored(keyed)) == sorted([work_id, mine["id"]])
    assert keyed.delete(f"/images/{mine['id']}", headers=family).status_code == 204


def test_a_key_of_several_collections_must_name_one(keyed: TestClient) -> None:
    answer = keyed.post("/search", files=files(photo("ann")), headers=bearer(TWO_KEY))
    assert answer.status_code == 403
    assert answer.json() == {
        "detail": "this API key is limited to the collections family, friends: name one in `collection`"
    }
    assert keyed.get("/images", params={"collection": "friends"}, headers=bearer(TWO_KEY)).status_code == 200


def test_videos_and_jobs_of_another_collection_are_404(keyed: TestClient, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "blank.mp4", {}, lambda _: [], 0.5).read_bytes()
    upload = keyed.post("/videos", files={"video": ("c.mp4", clip, "video/mp4")}, headers=bearer(WRITE_KEY))
    assert upload.status_code == 202, upload.text
    video_id, job_id = upload.json()["video_id"], upload.json()["job_id"]
    family = bearer(FAMILY_KEY)
    assert keyed.get(f"/videos/{video_id}", headers=family).json() == {
        "detail": f"no video with id {video_id}"
    }
    assert keyed.get(f"/jobs/{job_id}", headers=family).json() == {"detail": f"no job with id {job_id}"}
    assert keyed.delete(f"/videos/{video_id}", headers=family).status_code == 404
    assert keyed.get(f"/videos/{video_id}", headers=bearer(READ_KEY)).status_code == 200
    # Nor may it upload into another collection; the staged upload is not kept.
    refused = keyed.post(
        "/videos", files={"video": ("c.mp4", clip, "video/mp4")}, data={"collection": "work"}, headers=family
    )
    assert refused.status_code == 403
    listed = keyed.get("/videos", headers=bearer(READ_KEY)).json()["videos"]
    assert [video["id"] for video in listed] == [video_id]
    assert [path for path in (tmp_path / "data").rglob("tmp/*") if path.is_file()] == []


def test_another_host_is_a_400(client: TestClient) -> None:
    """DNS rebinding: the browser sends the attacker's name as Host."""
    answer = client.get("/images", headers={"Host": "attacker.example"})
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "this Host is not served here; allowed hosts are set by SEARCH_ALLOWED_HOSTS"
    }
    refused = client.post("/images", files=files(photo("ann")), headers={"Host": "attacker.example:8000"})
    assert refused.status_code == 400
    assert client.get("/images").json()["images"] == []
    for allowed in ["127.0.0.1:8000", "localhost", "[::1]:8000"]:
        assert client.get("/images", headers={"Host": allowed}).status_code == 200, allowed
    # The probe answers whatever the Host (an orchestrator may use the pod's address).
    assert client.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_a_cross_site_form_post_is_a_403_and_stores_nothing(client: TestClient) -> None:
    """Keys off (loopback): a page on another site POSTs a form to the service in the browser."""
    evil = {"Origin": "https://evil.example"}
    answer = client.post("/images", files=files(photo("ann")), headers=evil)
    assert answer.status_code == 403
    assert "cross-site" in answer.json()["detail"]
    assert (
        client.post(
            "/images", files=files(photo("ann")), headers={"Sec-Fetch-Site": "cross-site"}
        ).status_code
        == 403
    )
    assert client.post("/images", files=files(photo("ann")), headers={"Origin": "null"}).status_code == 403
    assert client.get("/images").json()["images"] == []
    # A cross-site delete is refused too; a GET from anywhere is harmless (no CORS: unreadable).
    [image] = ingest(client, photo("ann"))
    assert client.delete(f"/images/{image['id']}", headers=evil).status_code == 403
    assert client.get(f"/images/{image['id']}", headers=evil).status_code == 200
    # The service's own pages, and clients that are no browser, pass.
    assert client.delete(f"/images/{image['id']}", headers={"Origin": "http://testserver"}).status_code == 204


def test_cors_is_off_by_default_and_on_for_configured_origins(
    client: TestClient, make_settings: Callable[..., SearchSettings]
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/search", headers=preflight).headers
    assert "access-control-allow-origin" not in client.get("/images", headers=preflight).headers

    settings = make_settings(access=AccessSettings(api_keys=KEYS, cors_origins="https://app.example"))
    with TestClient(create_app(settings)) as configured:
        answer = configured.options(
            "/search", headers={**preflight, "Access-Control-Request-Headers": "authorization,x-api-key"}
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert {"authorization", "x-api-key"} <= set(
            answer.headers["access-control-allow-headers"].lower().split(", ")
        )
        origin = {"Origin": "https://app.example"}
        posted = configured.post("/search", files=files(photo("ann")), headers={**origin, **bearer(READ_KEY)})
        assert posted.status_code == 200
        assert posted.headers["access-control-allow-origin"] == "https://app.example"
        # Another origin gets no CORS headers, and its state-changing requests are refused.
        other = {"Origin": "https://evil.example", **bearer(WRITE_KEY)}
        assert configured.post("/images", files=files(photo("ann")), headers=other).status_code == 403


def test_auth_failures_are_counted_by_reason_without_key_material(keyed: TestClient) -> None:
    def count(reason: str) -> float:
        for line in keyed.get("/metrics", headers=bearer(READ_KEY)).text.splitlines():
            if line.startswith(f'auth_failures_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        return 0.0

    before = {reason: count(reason) for reason in ("missing_key", "unknown_key", "scope")}
    keyed.get("/images")
    keyed.get("/images", headers=bearer("not-a-key-0123456789abcdef"))
    keyed.delete("/images/1", headers=bearer(READ_KEY))
    metrics = keyed.get("/metrics", headers=bearer(READ_KEY)).text
    assert {reason: count(reason) - before[reason] for reason in before} == {
        "missing_key": 1,
        "unknown_key": 1,
        "scope": 1,
    }
    assert READ_KEY not in metrics and "not-a-key" not in metrics


def test_openapi_documents_401_and_403(keyed: TestClient) -> None:
    paths = keyed.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/images", "post"),
        ("/images/{image_id}", "delete"),
        ("/search", "post"),
        ("/collections", "get"),
    ]:
        assert {"401", "403"} <= set(paths[path][method]["responses"]), (path, method)
    assert "401" not in paths["/healthz"]["get"]["responses"]


def test_off_loopback_without_keys_the_settings_refuse() -> None:
    with pytest.raises(
        ValidationError, match=r"SEARCH_HOST=0\.0\.0\.0 is reachable from other machines: set SEARCH_API_KEYS"
    ):
        SearchSettings(host="0.0.0.0", access=AccessSettings(api_keys=""))
    assert SearchSettings(host="0.0.0.0", access=AccessSettings(api_keys=KEYS)).access.api_keys
    assert not SearchSettings(host="127.0.0.1", access=AccessSettings(api_keys="")).access.api_keys


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m search_service`` in an empty directory (no .env), with only ``env`` set for it."""
    clean = {
        name: value for name, value in os.environ.items() if not name.startswith(("SEARCH_", "EMBEDDER_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "search_service"],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), "DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_search_service_refuses_to_serve_all_interfaces_without_keys(tmp_path: Path) -> None:
    result = _start(tmp_path, SEARCH_HOST="0.0.0.0")
    assert result.returncode != 0
    assert "search service not started" in result.stderr
    assert "SEARCH_HOST=0.0.0.0 is reachable from other machines: set SEARCH_API_KEYS" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_key_list_stops_the_start_without_showing_the_keys(tmp_path: Path) -> None:
    result = _start(tmp_path, SEARCH_API_KEYS=f"{WRITE_KEY}:admin,short:read")
    assert result.returncode != 0
    assert "scope must be read or write" in result.stderr
    assert WRITE_KEY not in result.stderr + result.stdout


@pytest.fixture
def gated_embedder(httpserver: HTTPServer, fake_embedder: FakeEmbedder) -> FakeEmbedder:
    """The fake embedder behind the real embedder's gate: /faces and /models need EMBEDDER_KEY.

    On the server of ``fake_embedder`` (the one ``make_settings`` points at), whose handlers it
    replaces: the gate's must come first.
    """
    httpserver.clear_all_handlers()
    not_the_key = HeaderValueMatcher({"Authorization": lambda actual, expected: actual != expected})
    for path in ("/faces", "/models"):
        httpserver.expect_request(
            path, headers={"Authorization": f"Bearer {EMBEDDER_KEY}"}, header_value_matcher=not_the_key
        ).respond_with_json({"detail": "unknown API key"}, status=401)
    return FakeEmbedder(httpserver)


def test_the_embedder_key_is_sent_to_the_embedder(
    gated_embedder: FakeEmbedder, make_settings: Callable[..., SearchSettings]
) -> None:
    settings = make_settings(embedder={"api_key": SecretStr(EMBEDDER_KEY)})
    with TestClient(create_app(settings)) as client:
        [image] = ingest(client, photo("ann"))
        [face] = search(client, photo("ann", variant=1))["faces"]
        assert [hit["id"] for hit in face["hits"]] == [image["id"]]
    # The control: without the key, the gate refuses the same service.
    with TestClient(create_app(make_settings())) as client:
        refused = client.post("/images", files=files(photo("bob")))
        assert (refused.status_code, refused.json()) == (
            502,
            {"detail": "embedder answered 401: unknown API key"},
        )


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    make_settings: Callable[..., SearchSettings],
) -> None:
    """FastAPI reads a form before a route's dependencies run: the key is checked before that."""
    app = create_app(make_settings(access=AccessSettings(api_keys=KEYS)))
    reads: list[int] = []
    sent: list[Message] = []

    async def receive() -> Message:
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/images",
        "raw_path": b"/images",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401
    assert reads == []


def test_keys_and_the_embedder_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_API_KEYS", f"{READ_KEY}:read, {FAMILY_KEY}:write:family")
    monkeypatch.setenv("SEARCH_CORS_ORIGINS", "https://app.example,https://admin.example")
    monkeypatch.setenv("EMBEDDER_API_KEY", EMBEDDER_KEY)
    settings = SearchSettings(host="0.0.0.0")
    assert [(key.scope, key.collections) for key in settings.access.api_keys] == [
        ("read", None),
        ("write", frozenset({"family"})),
    ]
    assert settings.access.cors_origins == ["https://app.example", "https://admin.example"]
    assert settings.embedder.api_key is not None
    assert settings.embedder.api_key.get_secret_value() == EMBEDDER_KEY
    assert READ_KEY not in repr(settings) and EMBEDDER_KEY not in repr(settings)
