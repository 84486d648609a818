"""The conformance suite every index backend passes.

A backend's test module subclasses :class:`IndexConformance` and overrides the ``make_index``
fixture: a factory of *unopened* ``FaceIndex`` handles on one persistent location, so that calling
it twice in a test gives two handles on the same storage (a restart). ``settle`` is the hook for
backends with background work to finish before a test looks at it. See ``test_embedded.py``.

The vectors are synthetic but clustered like real embeddings (people = random directions, photos
= noisy copies): uniform random vectors would make any approximate index look broken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from search_service.domain import FaceBatch, Source
from search_service.errors import IndexUnavailableError
from search_service.index.base import FaceIndex

DIMENSION = 64
# Same-person cosine is about 1 / (1 + NOISE**2) = 0.8; different people ~0 +- 0.13.
NOISE = 0.5
MATCH = 0.6

IndexFactory = Callable[[], FaceIndex]


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Face:
    media_id: int
    source: Source
    collection: str
    vector: np.ndarray
    person: int


@dataclass
class MemorySource:
    """The store's part for these tests: the faces that exist, as a FaceSource."""

    store_id: str = "conformance-store"
    faces: dict[int, Face] = field(default_factory=dict)

    def face_batches(self, batch_size: int = 10_000) -> Iterator[FaceBatch]:
        ids = sorted(self.faces)
        for start in range(0, len(ids), batch_size):
            yield batch_of({i: self.faces[i] for i in ids[start : start + batch_size]})


def batch_of(faces: dict[int, Face]) -> FaceBatch:
    return FaceBatch(
        face_ids=np.fromiter(faces, np.int64, len(faces)),
        media_ids=np.array([f.media_id for f in faces.values()], np.int64),
        sources=[f.source for f in faces.values()],
        collections=[f.collection for f in faces.values()],
        vectors=np.stack([f.vector for f in faces.values()])
        if faces
        else np.empty((0, DIMENSION), np.float32),
    )


class Gallery:
    """People, photos and faces added to a source of truth and to the index under test alike."""

    def __init__(self, make_index: IndexFactory, settle: Callable[[FaceIndex], None]) -> None:
        self.make_index = make_index
        self.settle = settle
        self.source = MemorySource()
        self.rng = np.random.default_rng(7)
        self.centers = unit_rows(self.rng.standard_normal((2000, DIMENSION)))
        self.next_face = 1
        self.next_media = 1
        self.index = self._open()

    def _open(self) -> FaceIndex:
        index = self.make_index()
        index.open(self.source)
        return index

    def restart(self) -> None:
        self.index.close()
        self.index = self._open()

    def close(self) -> None:
        self.index.close()

    def noisy(self, person: int) -> np.ndarray:
        noise = self.rng.standard_normal(DIMENSION) / np.sqrt(DIMENSION)
        return unit_rows((self.centers[person] + NOISE * noise)[None])[0]

    def add(
        self,
        people: range,
        photos_each: int,
        *,
        collection: str = "main",
        source: Source = "image",
        faces_per_photo: int = 1,
    ) -> list[int]:
        """Photos of ``people`` (each photo's faces are all of one person); returns media ids."""
        added: dict[int, Face] = {}
        media_ids = []
        for person in people:
            for _ in range(photos_each):
                media_ids.append(self.next_media)
                for _ in range(faces_per_photo):
                    added[self.next_face] = Face(
                        self.next_media, source, collection, self.noisy(person), person
                    )
                    self.next_face += 1
                self.next_media += 1
        self.source.faces.update(added)
        self.index.add(batch_of(added))
        self.settle(self.index)
        return media_ids

    def remove(self, media_ids: list[int]) -> None:
        self.source.faces = {i: f for i, f in self.source.faces.items() if f.media_id not in media_ids}
        self.index.remove_media(media_ids)
        self.settle(self.index)

    def person_of(self, face_id: int) -> int:
        return self.source.faces[face_id].person

    def exact(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Brute force over the source: (face id, score) best first."""
        ids = np.array(sorted(self.source.faces))
        vectors = np.stack([self.source.faces[i].vector for i in ids])
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(int(ids[j]), float(row[j])) for j in top] for row, top in zip(scores, order, strict=True)]


def assert_unavailable(gallery: Gallery, media: list[int], reason: str) -> None:
    """With its server down, a remote backend says so: health is not ok, and every operation raises
    IndexUnavailableError (``reason``: how the message words it, e.g. "unreachable")."""
    health = gallery.index.health()
    assert not health.ok and reason in health.details["error"]
    with pytest.raises(IndexUnavailableError, match=f"{reason} while searching"):
        gallery.index.search(gallery.centers[:1], 5)
    with pytest.raises(IndexUnavailableError):
        gallery.add(range(5, 6), 1)
    with pytest.raises(IndexUnavailableError):
        gallery.index.remove_media(media[:1])
    with pytest.raises(IndexUnavailableError):
        gallery.index.count()


class IndexConformance:
    @pytest.fixture
    def make_index(self) -> IndexFactory:
        raise NotImplementedError("a backend's test class provides make_index")

    def settle(self, index: FaceIndex) -> None:
        """Wait for the backend's background work, if it has any."""

    @pytest.fixture
    def gallery(self, make_index: IndexFactory) -> Iterator[Gallery]:
        gallery = Gallery(make_index, self.settle)
        yield gallery
        gallery.close()

    def test_empty_index_answers_empty_lists(self, gallery: Gallery) -> None:
        queries = gallery.centers[:2]
        assert gallery.index.search(queries, 10) == [[], []]
        assert gallery.index.search(queries[:1], 10, collection="main", source="video") == [[]]
        assert gallery.index.count() == 0
        health = gallery.index.health()
        assert health.ok and health.faces == 0

    def test_nearest_first_with_cosine_scores(self, gallery: Gallery) -> None:
        gallery.add(range(40), 4)
        [hits] = gallery.index.search(gallery.centers[7][None], 10)
        assert len(hits) == 10
        assert {gallery.person_of(hit.face_id) for hit in hits[:4]} == {7}
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        for hit in hits:
            stored = gallery.source.faces[hit.face_id]
            assert hit.media_id == stored.media_id
            assert hit.score == pytest.approx(float(stored.vector @ gallery.centers[7]), abs=1e-4)

    def test_wrong_dimensions_and_k_are_refused(self, gallery: Gallery) -> None:
        gallery.add(range(3), 1)
        with pytest.raises(ValueError, match="dimensions"):
            gallery.index.search(np.ones((1, 3), np.float32), 5)
        batch = next(gallery.source.face_batches())
        wider = FaceBatch(batch.face_ids, batch.media_ids, batch.sources, batch.collections, np.ones((3, 8)))
        with pytest.raises(ValueError, match="dimensions"):
            gallery.index.add(wider)
        with pytest.raises(ValueError, match="k must be"):
            gallery.index.search(gallery.centers[:1], 0)

    def test_k_bounds_the_hits(self, gallery: Gallery) -> None:
        gallery.add(range(30), 4)
        assert len(gallery.index.search(gallery.centers[:1], 5)[0]) == 5
        assert len(gallery.index.search(gallery.centers[:1], 1000)[0]) == 120
        assert gallery.index.count() == 120

    def test_one_list_per_query_vector(self, gallery: Gallery) -> None:
        gallery.add(range(30), 3)
        results = gallery.index.search(gallery.centers[[3, 11, 29]], 3)
        assert [{gallery.person_of(h.face_id) for h in hits} for hits in results] == [{3}, {11}, {29}]

    def test_collection_filter_is_exact_even_when_rare(self, gallery: Gallery) -> None:
        gallery.add(range(200), 3, collection="big")
        small = gallery.add(range(200, 207), 1, collection="small")
        # The query is nearest to "big" faces: post-filtering a short list would find no "small" one.
        [hits] = gallery.index.search(gallery.centers[5][None], 5, collection="small")
        assert len(hits) == 5
        assert {hit.media_id for hit in hits} <= set(small)
        [hits] = gallery.index.search(gallery.centers[5][None], 50, collection="small")
        assert sorted(hit.media_id for hit in hits) == small
        assert gallery.index.search(gallery.centers[:1], 5, collection="nowhere") == [[]]

    def test_source_filter(self, gallery: Gallery) -> None:
        images = gallery.add(range(60), 2, source="image")
        videos = gallery.add(range(60), 2, source="video")
        query = gallery.centers[4][None]
        [video_hits] = gallery.index.search(query, 10, source="video")
        [image_hits] = gallery.index.search(query, 10, source="image")
        [all_hits] = gallery.index.search(query, 4)
        assert len(video_hits) == len(image_hits) == 10
        assert {hit.media_id for hit in video_hits} <= set(videos)
        assert {hit.media_id for hit in image_hits} <= set(images)
        assert {hit.media_id for hit in all_hits} & set(images)
        assert {hit.media_id for hit in all_hits} & set(videos)

    def test_collection_and_source_filters_combine(self, gallery: Gallery) -> None:
        gallery.add(range(50), 2, collection="a", source="image")
        gallery.add(range(50), 2, collection="a", source="video")
        wanted = gallery.add(range(50), 2, collection="b", source="video")
        [hits] = gallery.index.search(gallery.centers[:1], 1000, collection="b", source="video")
        assert sorted(hit.media_id for hit in hits) == wanted

    def test_removed_media_leave_search_at_once(self, gallery: Gallery) -> None:
        media = gallery.add(range(40), 3, faces_per_photo=2)
        gone = media[3 * 9 : 3 * 10]  # every photo of person 9
        gallery.index.remove_media(gone)  # no settle: removal must be visible immediately
        [hits] = gallery.index.search(gallery.centers[9][None], 50)
        assert not {hit.media_id for hit in hits} & set(gone)
        assert gallery.index.count() == 240 - 6
        gallery.index.remove_media([10**9])
        assert gallery.index.count() == 240 - 6

    def test_persists_across_restart(self, gallery: Gallery) -> None:
        media = gallery.add(range(120), 3)
        gallery.remove(media[:30])
        queries = gallery.centers[[0, 15, 100]]
        before = gallery.index.search(queries, 8)
        gallery.restart()
        self.settle(gallery.index)
        assert gallery.index.count() == 360 - 30
        after = gallery.index.search(queries, 8)
        assert [[h.face_id for h in hits] for hits in after] == [[h.face_id for h in hits] for hits in before]
        assert not {hit.media_id for hits in after for hit in hits} & set(media[:30])

    def test_adds_after_restart(self, gallery: Gallery) -> None:
        gallery.add(range(100), 2)
        gallery.restart()
        new = gallery.add(range(100, 102), 2)
        [hits] = gallery.index.search(gallery.centers[101][None], 2)
        assert {hit.media_id for hit in hits} == set(new[2:])
        assert gallery.index.count() == 204

    def test_agrees_with_brute_force(self, gallery: Gallery) -> None:
        gallery.add(range(600), 5)
        queries = np.stack([gallery.noisy(person) for person in range(0, 600, 12)])
        exact = gallery.exact(queries, 20)
        found = gallery.index.search(queries, 20)
        recall = np.mean(
            [
                len({f for f, _ in want} & {h.face_id for h in got}) / 20
                for want, got in zip(exact, found, strict=True)
            ]
        )
        matches = [{f for f, score in want if score >= MATCH} for want in exact]
        match_recall = sum(
            len(m & {h.face_id for h in got}) for m, got in zip(matches, found, strict=True)
        ) / sum(map(len, matches))
        assert recall >= 0.95
        assert match_recall >= 0.99
