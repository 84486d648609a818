"""The backend registry: every backend the settings accept can be built, and each loads its own
dependencies only when chosen."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from search_service.index import create_index
from search_service.index.embedded import EmbeddedIndex
from search_service.index.milvus import MilvusIndex
from search_service.index.opensearch import OpenSearchIndex
from search_service.index.registry import BACKENDS
from search_service.settings import HnswSettings, MilvusSettings, OpenSearchSettings, SearchSettings


def test_every_configurable_backend_is_registered() -> None:
    choices = typing.get_args(SearchSettings.model_fields["index_backend"].annotation)
    assert set(choices) == set(BACKENDS)


def test_each_backend_gets_its_settings_group(tmp_path: Path) -> None:
    opensearch = {"url": "http://127.0.0.1:1", "index": "elsewhere", "timeout_s": 2.0}
    milvus = {"uri": "http://127.0.0.1:1", "collection": "elsewhere", "timeout_s": 2.0}
    settings = SearchSettings().model_copy(
        update={
            "data_dir": tmp_path,
            "hnsw": HnswSettings(min_faces=1),
            "opensearch": OpenSearchSettings().model_copy(update=opensearch),
            "milvus": MilvusSettings().model_copy(update=milvus),
        }
    )
    embedded = create_index(settings.model_copy(update={"index_backend": "embedded"}))
    assert isinstance(embedded, EmbeddedIndex)
    assert embedded.health().details["hnsw_min_faces"] == 1
    remote = create_index(settings.model_copy(update={"index_backend": "opensearch"}))
    assert isinstance(remote, OpenSearchIndex)
    assert remote.health().details["index"] == "elsewhere"  # unreachable, but named as configured
    remote.close()
    milvus_index = create_index(settings.model_copy(update={"index_backend": "milvus"}))
    assert isinstance(milvus_index, MilvusIndex)
    health = milvus_index.health()
    assert not health.ok and health.details["collection"] == "elsewhere"
    milvus_index.close()


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    settings = SearchSettings().model_copy(update={"data_dir": tmp_path, "index_backend": "qdrant"})
    with pytest.raises(ValueError, match="unknown INDEX_BACKEND 'qdrant'"):
        create_index(settings)


def test_backends_are_imported_only_when_chosen() -> None:
    code = (
        "import sys; import search_service.index; "
        "print(sorted(m for m in ('faiss', 'opensearchpy', 'pymilvus') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
