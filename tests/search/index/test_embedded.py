"""The embedded index: the conformance suite in both of its modes, then what is its own.

Exact mode is the numpy path (the threshold is never reached); HNSW mode lowers the threshold so
that the suite runs through the faiss graph, and ``settle`` waits for its background build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_service.index.base import FaceIndex
from search_service.index.embedded import EmbeddedIndex
from search_service.settings import HnswSettings
from tests.search.index.conformance import Gallery, IndexConformance, IndexFactory

# Small enough that the suite's galleries cross the threshold and build graphs in milliseconds.
SMALL_GRAPHS = HnswSettings(min_faces=100, m=16, ef_construction=40, ef_search=64)


def graph_file_identity(tmp_path: Path) -> tuple[int, int]:
    """Changes whenever the graph file is replaced (it is always written whole, then renamed)."""
    stat = (tmp_path / "index" / EmbeddedIndex.GRAPH_FILE).stat()
    return stat.st_ino, stat.st_mtime_ns


def _settle(index: FaceIndex) -> None:
    assert isinstance(index, EmbeddedIndex)
    assert index.wait_idle(timeout=60)


def _hnsw_factory(directory: Path) -> IndexFactory:
    return lambda: EmbeddedIndex(directory, SMALL_GRAPHS)


class TestExactMode(IndexConformance):
    @pytest.fixture
    def make_index(self, tmp_path: Path) -> IndexFactory:
        return lambda: EmbeddedIndex(tmp_path / "index", HnswSettings(min_faces=10**9))

    def test_never_builds_a_graph(self, gallery: Gallery, tmp_path: Path) -> None:
        gallery.add(range(100), 3)
        gallery.restart()
        assert gallery.index.health().details["mode"] == "exact"
        assert not (tmp_path / "index" / EmbeddedIndex.GRAPH_FILE).exists()


class TestHnswMode(IndexConformance):
    @pytest.fixture
    def make_index(self, tmp_path: Path) -> IndexFactory:
        return _hnsw_factory(tmp_path / "index")

    def settle(self, index: FaceIndex) -> None:
        _settle(index)

    def assert_matches_brute_force(self, gallery: Gallery) -> None:
        queries = np.stack([gallery.noisy(person) for person in range(0, 150, 10)])
        exact = gallery.exact(queries, 5)
        found = gallery.index.search(queries, 5)
        assert [[f for f, _ in hits] for hits in exact] == [[h.face_id for h in hits] for hits in found]

    def test_graph_is_saved_and_loaded_without_rebuild(self, gallery: Gallery, tmp_path: Path) -> None:
        gallery.add(range(150), 2)
        assert gallery.index.health().details["mode"] == "hnsw"
        saved = graph_file_identity(tmp_path)
        gallery.restart()
        health = gallery.index.health()
        assert health.details["mode"] == "hnsw"
        assert not health.details["graph_building"]
        self.assert_matches_brute_force(gallery)
        gallery.restart()  # nothing changed: the file is neither rebuilt nor rewritten
        assert graph_file_identity(tmp_path) == saved

    def test_crash_after_save_is_caught_up(self, gallery: Gallery) -> None:
        media = gallery.add(range(150), 2)  # the build saves the graph
        gallery.add(range(150, 160), 2)  # after the save: only in memory
        gallery.remove(media[:10])
        crashed = gallery.index  # never closed, like a killed process
        gallery.index = gallery.make_index()
        gallery.index.open(gallery.source)
        # Correct at once (exact search while the graph catches up), then through the graph.
        self.assert_matches_brute_force(gallery)
        self.settle(gallery.index)
        assert gallery.index.health().details["mode"] == "hnsw"
        assert gallery.index.count() == 320 - 10
        self.assert_matches_brute_force(gallery)
        [hits] = gallery.index.search(gallery.centers[155][None], 2)
        assert {gallery.person_of(hit.face_id) for hit in hits} == {155}
        del crashed

    def test_graph_of_another_store_is_rebuilt(self, gallery: Gallery, tmp_path: Path) -> None:
        gallery.add(range(150), 2)
        gallery.index.close()
        saved = graph_file_identity(tmp_path)
        gallery.source.store_id = "another-store"
        gallery.index = gallery.make_index()
        gallery.index.open(gallery.source)
        self.assert_matches_brute_force(gallery)  # exact search while the graph is rebuilt
        self.settle(gallery.index)
        assert gallery.index.health().details["mode"] == "hnsw"
        assert graph_file_identity(tmp_path) != saved  # a new graph replaced the other store's
        self.assert_matches_brute_force(gallery)

    def test_drop_deletes_the_graph_and_the_next_open_rebuilds_it(
        self, gallery: Gallery, tmp_path: Path
    ) -> None:
        gallery.add(range(150), 2)
        gallery.index.drop()
        assert not (tmp_path / "index" / EmbeddedIndex.GRAPH_FILE).exists()
        assert gallery.index.count() == 0
        gallery.restart()  # the dropped handle saves nothing when it closes
        self.settle(gallery.index)
        assert gallery.index.health().details["mode"] == "hnsw"
        assert (tmp_path / "index" / EmbeddedIndex.GRAPH_FILE).exists()
        self.assert_matches_brute_force(gallery)

    def test_corrupt_graph_file_is_rebuilt(self, gallery: Gallery, tmp_path: Path) -> None:
        gallery.add(range(150), 2)
        gallery.index.close()
        (tmp_path / "index" / EmbeddedIndex.GRAPH_FILE).write_bytes(b"not a graph")
        gallery.index = gallery.make_index()
        gallery.index.open(gallery.source)
        self.settle(gallery.index)
        assert gallery.index.health().details["mode"] == "hnsw"
        self.assert_matches_brute_force(gallery)

    def test_many_deletes_compact_the_graph(self, gallery: Gallery) -> None:
        media = gallery.add(range(150), 2)
        gallery.remove(media[:120])
        details = gallery.index.health().details
        assert details["mode"] == "hnsw" and details["dead_rows"] == 0
        self.assert_matches_brute_force(gallery)

    def test_writes_during_a_background_build_are_kept(self, make_index: IndexFactory) -> None:
        gallery = Gallery(make_index, settle=lambda index: None)  # do not wait: write during the build
        media = gallery.add(range(800), 4)
        index = gallery.index
        assert isinstance(index, EmbeddedIndex)
        assert index.health().details["graph_building"]
        gallery.remove(media[:40])
        late = gallery.add(range(800, 810), 2)
        _settle(index)
        assert index.health().details["mode"] == "hnsw"
        assert index.count() == 3200 - 40 + 20
        self.assert_matches_brute_force(gallery)
        [hits] = index.search(gallery.centers[805][None], 2)
        assert {hit.media_id for hit in hits} == set(late[10:12])
        [hits] = index.search(gallery.centers[0][None], 10)
        assert not {hit.media_id for hit in hits} & set(media[:40])
        gallery.close()

    def test_selective_filter_through_the_graph_still_gives_k(self, gallery: Gallery) -> None:
        gallery.add(range(300), 3, collection="big")
        mid = gallery.add(range(300, 420), 1, collection="mid")  # above the threshold: graph + selector
        [hits] = gallery.index.search(gallery.centers[0][None], 60, collection="mid")
        assert len(hits) == 60
        assert {hit.media_id for hit in hits} <= set(mid)
