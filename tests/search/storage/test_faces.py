"""Read models over stored faces: the index feed, collection counts, where a photo hit comes from."""

from __future__ import annotations

import numpy as np

from search_service.storage import Storage
from tests.search.fakes import new_image, photo


def test_face_batches_yield_every_vector_in_id_order(storage: Storage) -> None:
    images = [new_image(photo("p", variant=i), people=("p", "q")) for i in range(7)]
    storage.images.add(images)
    batches = list(storage.faces.face_batches(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 4, 2]
    ids = np.concatenate([b.face_ids for b in batches])
    assert list(ids) == sorted(ids)
    vectors = np.concatenate([b.vectors for b in batches])
    expected = np.stack([face.embedding for image in images for face in image.detected.faces])
    np.testing.assert_array_equal(vectors, expected)
    assert {s for b in batches for s in b.sources} == {"image"}


def test_an_empty_store_feeds_no_batches(storage: Storage) -> None:
    assert list(storage.faces.face_batches()) == []
    assert storage.faces.collections() == []
    assert storage.faces.describe([1, 2]) == {} and storage.faces.describe([]) == {}


def test_collections_count_media_and_faces(storage: Storage) -> None:
    storage.images.add([new_image(photo("a", variant=i), people=("a", "b")) for i in range(3)])
    storage.images.add([new_image(photo("c"), collection="zoo")])
    stats = {c.name: (c.images, c.videos, c.faces) for c in storage.faces.collections()}
    assert stats == {"main": (3, 0, 6), "zoo": (1, 0, 1)}


def test_a_photo_face_is_described_for_its_hit(storage: Storage) -> None:
    [stored], faces = storage.images.add([new_image(photo("dee"), external_id="d.png", collection="work")])
    face_id = int(faces.face_ids[0])
    hit = storage.faces.describe([face_id, face_id, 999_999])  # repeats and unknown ids are fine
    assert list(hit) == [face_id]
    where = hit[face_id]
    assert (where.source, where.media_id, where.external_id, where.collection) == (
        "image",
        stored.image.id,
        "d.png",
        "work",
    )
    assert where.box == stored.image.faces[0].box
    assert (where.time_ranges, where.person, where.track_id, where.time_s) == (None, None, None, None)
