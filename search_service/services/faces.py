"""Faces from the embedder, checked against the store's embedding model on every answer.

Every ``/faces`` answer names the model that made its embeddings: vectors of any other model
than the one the store holds are refused right there (ModelMismatchError), before anything is
stored or compared, even when only some of the photos were answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from search_service.clients.embedder import EmbedderClient, Outcomes
from search_service.domain import Detection, ModelThresholds, Upload
from search_service.errors import EmbedderUnavailableError, ModelMismatchError
from search_service.storage.embedding_model import EmbeddingModelRecord


class DetectsFaces(Protocol):
    """What needs faces detected and embedded: the checked detector below, or the bare client."""

    async def detect(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> Detection: ...


class FaceDetector:
    def __init__(self, embedder: EmbedderClient, model_record: EmbeddingModelRecord) -> None:
        self._embedder = embedder
        self._model_record = model_record

    async def detect(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> Detection:
        detection = await self._embedder.detect(uploads, min_face_size=min_face_size, threshold=threshold)
        # On the loop, not in a worker thread: clip analyses waiting on this loop may hold every
        # worker. The check is in memory; only a store's very first answer writes one short row.
        self._model_record.ensure(detection.model)
        return detection

    async def detect_each(self, uploads: Sequence[Upload]) -> Outcomes:
        """Faces per upload, or the embedder's verdict on it: a refused photo fails only itself."""
        outcomes = await self._embedder.detect_each(uploads)
        if outcomes.model is not None:  # None: every photo was refused, no vector to check
            self._model_record.ensure(outcomes.model)
        return outcomes

    async def model_thresholds(self) -> ModelThresholds:
        """The match thresholds calibrated for the embedder's model, as its health probe last saw it
        (``GET /healthz`` reports the same); that model must be the stored vectors' own.

        Raises EmbedderUnavailableError when the embedder does not answer, ModelMismatchError when
        it runs another model (even one of the same dimension)."""
        status = await self._embedder.status()
        if status.model is None or status.thresholds is None:
            raise EmbedderUnavailableError(
                f"the match threshold is the embedding model's, and the embedder does not answer "
                f"({status.problem}): pass `threshold`, or retry later"
            )
        try:
            self._model_record.ensure(status.model)
        except ModelMismatchError as error:
            raise ModelMismatchError(
                f"{error}; or pass `threshold`: the embedder's is its own model's"
            ) from error
        return status.thresholds
