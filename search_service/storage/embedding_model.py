"""Which embedding model the stored vectors come from, so that no other model's join them.

Scores between vectors of different models are meaningless yet look like numbers: the store
records the model on first use, and vectors of any other model are refused afterwards. The
recorded model is kept in memory, so the check that every embedder answer passes costs nothing.
"""

from __future__ import annotations

import threading

from search_service.domain import EmbeddingModel
from search_service.errors import ModelMismatchError
from search_service.storage.database import Database


class EmbeddingModelRecord:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._lock = threading.Lock()
        self._recorded = self._read()

    def recorded(self) -> EmbeddingModel | None:
        return self._recorded

    def ensure(self, model: EmbeddingModel) -> None:
        """Record ``model`` on first use; raise ModelMismatchError for any other model afterwards."""
        if self._recorded == model:
            return
        with self._lock:
            if self._recorded is None:
                with self._database.transaction() as db:
                    db.executemany(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                        [("embedding_model", model.name), ("embedding_dimension", str(model.dimension))],
                    )
                self._recorded = self._read()
            if self._recorded != model:
                stored = self._recorded
                assert stored is not None
                raise ModelMismatchError(
                    f"this index holds {stored.name} vectors ({stored.dimension}-d) but the embedder runs "
                    f"{model.name} ({model.dimension}-d); use another DATA_DIR or the same model"
                )

    def _read(self) -> EmbeddingModel | None:
        name, dimension = self._database.meta("embedding_model"), self._database.meta("embedding_dimension")
        if name is None or dimension is None:
            return None
        return EmbeddingModel(name, int(dimension))
