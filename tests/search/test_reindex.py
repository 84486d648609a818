"""``python -m search_service.reindex``: the store's faces into the configured index, reconciled by
default and from scratch with ``--rebuild``, for the embedded backend and Milvus (on Milvus Lite).
The vectors are the fake embedder's, stored as the images service would store them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search_service.index import create_index
from search_service.index.embedded import EmbeddedIndex
from search_service.reindex import main, reindex
from search_service.settings import HnswSettings, MilvusSettings, SearchSettings
from search_service.storage import Storage
from tests.search.fakes import face_vector, new_image, photo

BACKENDS = ["embedded", "milvus"]
GRAPH = Path("index") / EmbeddedIndex.GRAPH_FILE


@pytest.fixture(autouse=True)
def logging_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() sets up logging for the process; here it would outlive the test's captured stderr."""
    monkeypatch.setattr("search_service.reindex.configure_logging", lambda *args, **kwargs: None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Alice in three photos of "main"; Bob and Carol together in two photos of "team"."""
    storage = Storage.open(tmp_path / "data")
    storage.images.add([new_image(photo("alice", variant=i)) for i in range(3)])
    storage.images.add(
        [
            new_image(photo("bob", "carol", variant=i), people=("bob", "carol"), collection="team")
            for i in range(2)
        ]
    )
    storage.close()
    return tmp_path / "data"


def settings_for(backend: str, data_dir: Path) -> SearchSettings:
    if backend == "milvus":
        pytest.importorskip("milvus_lite", reason="milvus-lite (in the test extra) is not installed")
    milvus = MilvusSettings(uri=str(data_dir.parent / "milvus.db"), collection="reindexed", connect_wait_s=0)
    return SearchSettings().model_copy(
        update={
            "data_dir": data_dir,
            "index_backend": backend,
            "hnsw": HnswSettings(min_faces=5),  # the embedded index builds (and saves) its graph
            "milvus": milvus,
        }
    )


def search(settings: SearchSettings, vector: np.ndarray, k: int, **filters: Any) -> list[int]:
    """Media ids of the hits, through a fresh handle opened as the service opens it."""
    storage = Storage.open(settings.data_dir)
    index = create_index(settings)
    try:
        index.open(storage.faces)
        getattr(index, "wait_idle", lambda: None)()
        [hits] = index.search(vector[None], k, **filters)
        return [hit.media_id for hit in hits]
    finally:
        index.close()
        storage.close()


def alice(data_dir: Path) -> list[int]:
    storage = Storage.open(data_dir)
    try:
        return [image.id for image in storage.images.find(collection="main")]
    finally:
        storage.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_index_holds_the_store_and_then_follows_it(backend: str, data_dir: Path) -> None:
    settings = settings_for(backend, data_dir)
    summary = reindex(settings, progress=False)
    assert (summary.backend, summary.rebuilt, summary.stored, summary.indexed, summary.ok) == (
        backend,
        False,
        7,
        7,
        True,
    )
    assert summary.line().startswith(f"{backend} index reconciled: 7 faces indexed of 7 stored in ")
    query = face_vector("alice", photo("alice", variant=9), 0)
    photos = alice(data_dir)
    assert sorted(search(settings, query, 3)) == photos
    assert len(search(settings, query, 10, collection="team")) == 4

    storage = Storage.open(data_dir)  # a photo deleted while the index was elsewhere
    storage.images.delete(photos[0])
    storage.close()
    assert reindex(settings, progress=False).indexed == 6
    assert sorted(search(settings, query, 2)) == photos[1:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rebuild_drops_the_index_first(backend: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(backend, data_dir)
    reindex(settings, progress=False)
    drops: list[str] = []
    index_class = type(create_index(settings))
    original = index_class.drop

    def drop(self: Any) -> None:
        drops.append(self.name)
        original(self)

    monkeypatch.setattr(index_class, "drop", drop)
    before = (data_dir / GRAPH).stat().st_mtime_ns if backend == "embedded" else None
    summary = reindex(settings, rebuild=True, progress=False)
    assert drops == [backend] and summary.rebuilt and summary.indexed == 7
    if before is not None:
        assert (data_dir / GRAPH).stat().st_mtime_ns != before  # a new graph, saved by this run
    query = face_vector("bob", photo("bob", variant=9), 0)
    assert len(set(search(settings, query, 2, collection="team"))) == 2


def test_the_command_line(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("milvus_lite", reason="milvus-lite (in the test extra) is not installed")
    monkeypatch.chdir(data_dir.parent)  # no .env file here
    monkeypatch.delenv("MILVUS_URI", raising=False)
    for name, value in {
        "DATA_DIR": str(data_dir),
        "INDEX_BACKEND": "milvus",
        "SEARCH_MILVUS_URI": str(data_dir.parent / "cli.db"),
        "SEARCH_MILVUS_CONNECT_WAIT_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["--quiet"]) == 0
    assert "milvus index reconciled: 7 faces indexed of 7 stored" in capsys.readouterr().out
    assert main(["--quiet", "--rebuild"]) == 0
    assert "milvus index rebuilt: 7 faces indexed of 7 stored" in capsys.readouterr().out


def test_refuses_a_data_dir_without_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("INDEX_BACKEND", "embedded")
    assert main(["--quiet"]) == 2
    assert not (tmp_path / "nowhere").exists()  # nothing created, nothing emptied


def test_an_unreachable_index_is_a_clear_failure(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    monkeypatch.chdir(data_dir.parent)
    for name, value in {
        "DATA_DIR": str(data_dir),
        "INDEX_BACKEND": "milvus",
        "MILVUS_URI": "http://127.0.0.1:1",
        "SEARCH_MILVUS_CONNECT_WAIT_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["--quiet"]) == 2
    assert "reindex failed: Milvus unavailable while connecting" in capsys.readouterr().err
