"""The embedding model of the stored vectors: recorded on first use, enforced from then on."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_service.domain import EmbeddingModel
from search_service.errors import ModelMismatchError
from search_service.storage import Storage


def test_embedding_model_is_recorded_once_and_enforced(storage: Storage) -> None:
    assert storage.embedding_model.recorded() is None
    storage.embedding_model.ensure(EmbeddingModel("m1", 128))
    storage.embedding_model.ensure(EmbeddingModel("m1", 128))
    assert storage.embedding_model.recorded() == EmbeddingModel("m1", 128)
    with pytest.raises(ModelMismatchError, match=r"m1 vectors \(128-d\).*m2 \(512-d\)"):
        storage.embedding_model.ensure(EmbeddingModel("m2", 512))
    with pytest.raises(ModelMismatchError):  # the same name with another dimension is another model
        storage.embedding_model.ensure(EmbeddingModel("m1", 512))
    assert storage.embedding_model.recorded() == EmbeddingModel("m1", 128)


def test_the_recorded_model_survives_reopening(data_dir: Path) -> None:
    first = Storage.open(data_dir)
    first.embedding_model.ensure(EmbeddingModel("m1", 128))
    first.close()
    second = Storage.open(data_dir)
    try:
        assert second.embedding_model.recorded() == EmbeddingModel("m1", 128)
        with pytest.raises(ModelMismatchError):
            second.embedding_model.ensure(EmbeddingModel("m2", 128))
    finally:
        second.close()
