"""The shared conformance suite against a live Milvus server (2.5 or later; 3.x is what pymilvus 3
is made for).

Runs when ``MILVUS_URI`` is set, with ``SEARCH_MILVUS_TOKEN`` and ``SEARCH_MILVUS_DB_NAME`` when
the server wants them. Every test gets its own collection, dropped afterwards, so a shared server
is left as it was found.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from search_service.settings import MilvusSettings
from tests.search.index.conformance import IndexConformance, IndexFactory

URI = os.environ.get("MILVUS_URI", "")

pytestmark = [
    pytest.mark.milvus,
    pytest.mark.skipif(not URI, reason="set MILVUS_URI to run against a live Milvus server"),
]


class TestLiveConformance(IndexConformance):
    @pytest.fixture
    def make_index(self) -> Iterator[IndexFactory]:
        from search_service.index.milvus import MilvusIndex
        from search_service.index.milvus.server import connect

        name = f"facesearch_test_{uuid.uuid4().hex[:12]}"
        # The URI, token and database from the environment, as the service reads them.
        settings = MilvusSettings().model_copy(update={"collection": name, "connect_wait_s": 10})
        yield lambda: MilvusIndex(settings)
        # After the gallery fixture (which depends on this one) has closed its handle.
        client = connect(settings)
        try:
            if client.has_collection(name):
                client.drop_collection(name)
        finally:
            client.close()
