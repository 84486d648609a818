"""Settings groups read from the environment under their documented names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from search_service.settings import SearchSettings

# Every variable these tests set or expect unset, so that the caller's environment cannot leak in.
NAMES = (
    "DATA_DIR",
    "INDEX_BACKEND",
    "EMBEDDER_URL",
    "OPENSEARCH_URL",
    "SEARCH_PORT",
    "SEARCH_MATCH_THRESHOLD",
    "SEARCH_DEFAULT_COLLECTION",
    "SEARCH_EMBEDDER_RETRIES",
    "SEARCH_EMBEDDER_BATCH_IMAGES",
    "SEARCH_MAX_IMAGE_BYTES",
    "SEARCH_MAX_VIDEO_BYTES",
    "SEARCH_HNSW_M",
    "SEARCH_HNSW_EF_SEARCH",
    "SEARCH_INDEX_THREADS",
    "SEARCH_OPENSEARCH_INDEX",
    "SEARCH_OPENSEARCH_USERNAME",
    "SEARCH_OPENSEARCH_PASSWORD",
    "SEARCH_VIDEO_WORKERS",
    "SEARCH_VIDEO_BATCH_FRAMES",
    "SEARCH_MIN_FREE_BYTES",
    "SEARCH_DISK_RESERVE_BYTES",
    "SEARCH_API_KEYS",
    "SEARCH_ALLOWED_HOSTS",
    "SEARCH_CORS_ORIGINS",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here


def test_defaults_without_environment() -> None:
    settings = SearchSettings()
    assert (settings.data_dir, settings.index_backend, settings.match_threshold) == (
        Path("data"),
        "embedded",
        None,  # the embedder's model's own threshold
    )
    assert settings.embedder.url == "http://127.0.0.1:8001"
    assert (settings.hnsw.m, settings.hnsw.threads, settings.video.workers) == (32, 1, 1)
    assert settings.opensearch.http_auth() is None


def test_each_group_reads_its_own_names(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "DATA_DIR": "/srv/faces",
        "INDEX_BACKEND": "opensearch",
        "EMBEDDER_URL": "http://embedder:8001",
        "OPENSEARCH_URL": "https://os1:9200,https://os2:9200",
        "SEARCH_PORT": "8080",
        "SEARCH_MATCH_THRESHOLD": "0.7",
        "SEARCH_DEFAULT_COLLECTION": "family",
        "SEARCH_EMBEDDER_RETRIES": "5",
        "SEARCH_EMBEDDER_BATCH_IMAGES": "4",
        "SEARCH_MAX_IMAGE_BYTES": "1000",
        "SEARCH_MAX_VIDEO_BYTES": "2000",
        "SEARCH_HNSW_M": "48",
        "SEARCH_HNSW_EF_SEARCH": "100",
        "SEARCH_INDEX_THREADS": "4",
        "SEARCH_OPENSEARCH_INDEX": "faces-test",
        "SEARCH_OPENSEARCH_USERNAME": "admin",
        "SEARCH_OPENSEARCH_PASSWORD": "secret",
        "SEARCH_VIDEO_WORKERS": "3",
        "SEARCH_VIDEO_BATCH_FRAMES": "2",
        "SEARCH_MIN_FREE_BYTES": "3000",
        "SEARCH_DISK_RESERVE_BYTES": "4000",
        "SEARCH_CORS_ORIGINS": "https://photos.example",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SearchSettings()
    assert (settings.data_dir, settings.index_backend) == (Path("/srv/faces"), "opensearch")
    assert settings.port == 8080
    assert (settings.match_threshold, settings.default_collection) == (0.7, "family")
    assert (settings.embedder.url, settings.embedder.retries, settings.embedder.batch_images) == (
        "http://embedder:8001",
        5,
        4,
    )
    assert (settings.uploads.max_image_bytes, settings.uploads.max_video_bytes) == (1000, 2000)
    assert (settings.hnsw.m, settings.hnsw.ef_search, settings.hnsw.threads) == (48, 100, 4)
    assert settings.opensearch.url == "https://os1:9200,https://os2:9200"
    assert settings.opensearch.index == "faces-test"
    assert settings.opensearch.http_auth() == ("admin", "secret")
    assert "secret" not in repr(settings)  # the password stays out of logs
    assert (settings.video.workers, settings.video.batch_frames) == (3, 2)
    assert (settings.disk.min_free_bytes, settings.disk.reserve_bytes) == (3000, 4000)
    assert settings.access.cors_origins == ["https://photos.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEARCH_MATCH_THRESHOLD", "1.5"),
        ("SEARCH_VIDEO_WORKERS", "0"),
        ("SEARCH_HNSW_M", "2"),
        ("SEARCH_EMBEDDER_BATCH_IMAGES", "0"),
        ("INDEX_BACKEND", "faiss"),
    ],
)
def test_out_of_range_values_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        SearchSettings()
