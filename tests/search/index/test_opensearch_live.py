"""The shared conformance suite against a live OpenSearch cluster (k-NN plugin, 2.13 or later).

Runs when ``OPENSEARCH_URL`` is set (credentials may sit in the URL); ``OPENSEARCH_VERIFY_CERTS=0``
accepts a self-signed certificate, as the demo security configuration has. Every test gets its own
index, deleted afterwards, so a shared cluster is left as it was found.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from opensearchpy import OpenSearch

from search_service.index.opensearch import OpenSearchIndex
from search_service.settings import OpenSearchSettings
from tests.search.index.conformance import IndexConformance, IndexFactory

URL = os.environ.get("OPENSEARCH_URL", "")
VERIFY_CERTS = os.environ.get("OPENSEARCH_VERIFY_CERTS", "1") != "0"

pytestmark = [
    pytest.mark.opensearch,
    pytest.mark.skipif(not URL, reason="set OPENSEARCH_URL to run against a live cluster"),
]


class TestLiveConformance(IndexConformance):
    @pytest.fixture
    def make_index(self) -> Iterator[IndexFactory]:
        name = f"facesearch-test-{uuid.uuid4().hex[:12]}"
        update = {"url": URL, "index": name, "verify_certs": VERIFY_CERTS, "connect_wait_s": 10}
        settings = OpenSearchSettings().model_copy(update=update)
        yield lambda: OpenSearchIndex(settings)
        # After the gallery fixture (which depends on this one) has closed its handle.
        client = OpenSearch(hosts=[URL], verify_certs=VERIFY_CERTS, ssl_show_warn=False)
        try:
            client.indices.delete(index=name, ignore_unavailable=True)
        finally:
            client.close()
