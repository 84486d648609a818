"""The web page's files as the search service serves them (search_service/api/web.py), with and
without API keys; what the page does in a browser is tests/search/web/test_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from search_service.api.web import WEB_DIR
from search_service.main import create_app
from search_service.settings import AccessSettings, SearchSettings

KEY = "page-key-0123456789abcdef"


@pytest.fixture
def keyed(make_settings: Callable[..., SearchSettings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(access=AccessSettings(api_keys=f"{KEY}:write")))) as client:
        yield client


def page_assets() -> list[str]:
    """Every file of the page, as the browser asks for it."""
    return sorted(f"/ui/{path.name}" for path in WEB_DIR.iterdir() if path.name != "index.html")


def test_the_page_is_served_at_the_root_with_a_policy_that_loads_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>facesearch</title>" in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "http" not in policy  # no other origin is allowed


def test_every_asset_is_served_with_its_type(client: TestClient) -> None:
    types = {".js": "javascript", ".css": "text/css"}
    assert {path.rsplit(".", 1)[1] for path in page_assets()} == {"js", "css"}
    for path in page_assets():
        response = client.get(path)
        assert response.status_code == 200, path
        assert types["." + path.rsplit(".", 1)[1]] in response.headers["content-type"], path


def test_the_page_references_only_its_own_files() -> None:
    """No CDN, no web font: every URL in the markup, the style and the scripts is same-origin."""
    for path in WEB_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path.name
        for imported in re.findall(r'from "([^"]+)"', text):
            assert (WEB_DIR / imported.removeprefix("./")).is_file(), (path.name, imported)


def test_the_page_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(path.startswith("/ui") for path in paths)


def test_with_keys_the_page_loads_without_one_and_the_data_still_needs_one(keyed: TestClient) -> None:
    assert keyed.get("/").status_code == 200
    for path in page_assets():
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/images").status_code == 401
    assert keyed.get("/images", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize(
    "path", ["/ui/../images", "/ui/%2e%2e/images", "/ui/..%2fimages", "/uiimages", "/ui"]
)
def test_the_open_asset_prefix_opens_nothing_else(keyed: TestClient, path: str) -> None:
    """Whatever the dots, a path under /ui/ reaches only the page's folder (StaticFiles refuses
    to leave it), and one beside it needs the key."""
    assert keyed.get(path).status_code in (401, 404)


def test_a_missing_asset_is_a_404(client: TestClient) -> None:
    assert client.get("/ui/nothing.js").status_code == 404
