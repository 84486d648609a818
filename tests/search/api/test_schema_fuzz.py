"""schemathesis over the search service's OpenAPI schema: no input it generates, valid or not, gets
a server error or a status the route does not document, whoever sends it.

The service runs as a process (``python -m search_service`` on a free port, over a fresh data
directory and the fake embedder), so every request crosses a real socket, uvicorn, the middleware
and the lifespan that opened the store, as a client's would. The schema is the app's own, read
when the tests are collected (one test per operation); the process serves the same app.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from search_service.main import create_app
from search_service.settings import SearchSettings
from tests.openapi_fuzz import app_schema, files_drawn_from, fuzz_tests
from tests.search.fakes import FakeEmbedder, photo
from tools.processes import ServiceProcess, search_service

# Cases per operation (schemathesis adds some explicit ones): about a minute in all on 2 cores.
EXAMPLES = 200
# Per operation and refused caller: what they are refused with hardly depends on the input.
REFUSED_EXAMPLES = 10
WRITE_KEY = "fuzz-write-key-0123456789"
READ_KEY = "fuzz-read-key-0123456789"
# Who the access control refuses, in part or in whole, and the headers they send.
REFUSED_CALLERS = {
    "no key": {},
    "read key for one collection": {"X-API-Key": READ_KEY},
    "foreign Host": {"X-API-Key": WRITE_KEY, "Host": "attacker.example"},
}

schema = app_schema(create_app(SearchSettings(data_dir=Path("unused"), log_json=False, log_level="WARNING")))


@pytest.fixture(scope="module", autouse=True)
def fake_photos() -> Iterator[None]:
    """File parts are often photos the fake embedder finds people in, so that uploads get stored
    and searched with every fuzzed field beside them."""
    people = st.lists(st.sampled_from(["alice", "bob", "carol"]), max_size=3)
    photos = st.builds(lambda names, variant: photo(*names, variant=variant), people, st.integers(0, 10**6))
    with files_drawn_from(photos):
        yield


@contextlib.contextmanager
def _running(data_dir: Path, env: dict[str, str], headers: dict[str, str]) -> Iterator[ServiceProcess]:
    """The service over a fresh data directory, with a few photos stored, so that small ids exist."""
    embedder = HTTPServer(threaded=True)
    embedder.start()
    try:
        service = search_service(str(data_dir), FakeEmbedder(embedder).url)
        service.env |= env
        with service.running() as running:
            files = [("image", (f"p{i}.png", photo("alice", variant=i), "image/png")) for i in range(3)]
            httpx.post(f"{running.url}/images", files=files, headers=headers, timeout=30).raise_for_status()
            yield running
    finally:
        embedder.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """As it starts by default: on loopback, without keys."""
    with _running(tmp_path_factory.mktemp("fuzz") / "data", {}, {}) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """With a write key and a read key limited to the collection "main"."""
    keys = {"SEARCH_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read:main"}
    with _running(tmp_path_factory.mktemp("fuzz-keyed") / "data", keys, {"X-API-Key": WRITE_KEY}) as running:
        yield running


test_no_server_error_and_no_undocumented_status, test_refused_callers_get_documented_statuses = fuzz_tests(
    schema, examples=EXAMPLES, refused_examples=REFUSED_EXAMPLES, refused_callers=REFUSED_CALLERS
)
