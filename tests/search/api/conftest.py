"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from search_service.main import create_app
from search_service.settings import AccessSettings, SearchSettings
from tests.search.api.helpers import FAMILY_KEY, WRITE_KEY


@pytest.fixture
def keyed(make_settings: Callable[..., SearchSettings]) -> Iterator[TestClient]:
    """A service with API keys: WRITE_KEY writes and reads everything, FAMILY_KEY reads "family" only."""
    keys = f"{WRITE_KEY}:write,{FAMILY_KEY}:read:family"
    with TestClient(create_app(make_settings(access=AccessSettings(api_keys=keys)))) as client:
        yield client
