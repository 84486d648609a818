"""Keeps vectors from two different embedding models out of one index.

Scores between vectors of different models are meaningless yet look like numbers: the store
records the model of its vectors on first use, and later ingests and searches with another
model are refused with a 409 rather than answered with nonsense.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool

from search_service.domain import DetectedImage, EmbeddingModel
from search_service.embedder_client import EmbedderClient
from search_service.errors import EmbedderProtocolError
from search_service.store import Store


class ModelGuard:
    def __init__(self, store: Store, embedder: EmbedderClient) -> None:
        self._store = store
        self._embedder = embedder
        self._verified: EmbeddingModel | None = None

    async def check(self, images: Sequence[DetectedImage]) -> None:
        """Raise unless these embeddings come from the store's model (recorded on first use)."""
        model = await self._embedder.model()
        if model != self._verified:
            await run_in_threadpool(self._store.ensure_embedding_model, model)
            self._verified = model
        for image in images:
            for face in image.faces:
                if face.embedding.shape != (model.dimension,):
                    size = face.embedding.shape[0]
                    raise EmbedderProtocolError(
                        f"embedder sent a {size}-d embedding; {model.name} is {model.dimension}-d"
                    )
