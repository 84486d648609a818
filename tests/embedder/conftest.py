"""Inputs shared by the embedder's tests."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from facesearch_common.access import DEFAULT_ALLOWED_HOSTS

BOMB_SIDE = 6300


@pytest.fixture(scope="session")
def png_bomb() -> bytes:
    """Issue 10, row 1: a 4.9 KB PNG declaring 6300 x 6300 pixels (one bit each, all black)."""
    buffer = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _test_client_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve TestClient's Host ("testserver") besides loopback: the Host allow-list refuses it."""
    monkeypatch.setenv("EMBEDDER_ALLOWED_HOSTS", ",".join([*DEFAULT_ALLOWED_HOSTS, "testserver"]))
