"""Photos in storage: round trips, lookups, dedupe by content within a collection, deletion."""

from __future__ import annotations

import numpy as np

from search_service.storage import Storage
from tests.search.fakes import face_vector, new_image, photo
from tests.search.storage.records import face_count, stored_files


def test_add_get_find_delete_round_trip(storage: Storage) -> None:
    data = photo("alice", "bob")
    [result], faces = storage.images.add([new_image(data, people=("alice", "bob"), external_id="a/1.png")])
    image = result.image
    assert not result.duplicate
    assert (image.external_id, image.collection, image.size_bytes) == ("a/1.png", "main", len(data))
    assert (image.content_type, image.width, image.height) == ("image/png", 48, 48)
    assert image.metadata == {"source": "test"}
    assert [face.box for face in image.faces] == [(1.0, 2.0, 30.0, 40.0), (2.0, 2.0, 31.0, 40.0)]
    assert image.faces[0].landmarks == [[5.0, 6.0]] * 5
    # The new faces come back for the index, with their vectors.
    assert list(faces.face_ids) == [face.id for face in image.faces]
    assert list(faces.media_ids) == [image.id, image.id]
    assert list(faces.sources) == ["image", "image"] and list(faces.collections) == ["main", "main"]
    np.testing.assert_allclose(faces.vectors[1], face_vector("bob", data, 1))

    assert storage.images.get(image.id) == image
    assert storage.images.file(image).read_bytes() == data
    assert storage.images.find(sha256=[image.sha256]) == [image]
    assert storage.images.find(external_id="a/1.png") == [image]
    assert storage.images.find(collection="main") == [image]
    assert storage.images.find(collection="other") == []
    assert storage.videos.get(image.id) is None  # a photo is no video

    assert storage.images.delete(image.id)
    assert storage.images.get(image.id) is None
    assert storage.images.find() == []
    assert storage.faces.describe([face.id for face in image.faces]) == {}
    assert face_count(storage) == 0
    assert stored_files(storage.data_dir) == []
    assert not storage.images.delete(image.id)


def test_find_pages_by_id(storage: Storage) -> None:
    results, _ = storage.images.add([new_image(photo("kim", variant=i)) for i in range(5)])
    ids = [result.image.id for result in results]
    first = storage.images.find(limit=3)
    assert [image.id for image in first] == ids[:3]
    assert [image.id for image in storage.images.find(after_id=first[-1].id, limit=3)] == ids[3:]


def test_same_photo_is_a_duplicate_within_a_collection_only(storage: Storage) -> None:
    data = photo("carol")
    [first], _ = storage.images.add([new_image(data)])
    [again, twin], faces = storage.images.add([new_image(data), new_image(data, collection="other")])
    assert again.duplicate and again.image == first.image
    assert not twin.duplicate and twin.image.id != first.image.id
    assert len(faces) == 1 and list(faces.collections) == ["other"]  # only the new copy adds a face
    assert len(stored_files(storage.data_dir)) == 1  # one file serves both rows

    assert storage.images.delete(first.image.id)
    assert storage.images.file(twin.image).read_bytes() == data  # still used by the twin
    assert [image.id for image in storage.images.find(sha256=[twin.image.sha256])] == [twin.image.id]
    assert storage.images.delete(twin.image.id)
    assert stored_files(storage.data_dir) == []  # the last row naming it is gone


def test_a_deleted_photo_comes_back_as_a_new_one(storage: Storage) -> None:
    data = photo("max")
    [gone], _ = storage.images.add([new_image(data)])
    storage.images.delete(gone.image.id)
    [again], _ = storage.images.add([new_image(data)])
    assert not again.duplicate and again.image.id > gone.image.id  # ids are never reused
    assert storage.images.file(again.image).read_bytes() == data
