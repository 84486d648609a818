"""Photo ingest (deduplicated by content within a collection), lookup and deletion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool

from search_service.domain import ImageRecord, NewImage, Upload
from search_service.embedder_client import EmbedderClient
from search_service.errors import NotFoundError
from search_service.index.base import FaceIndex
from search_service.schemas import IngestedImage
from search_service.services.model_guard import ModelGuard
from search_service.store import Store, StoredImage

log = structlog.get_logger(__name__)


class ImagesService:
    def __init__(self, store: Store, index: FaceIndex, embedder: EmbedderClient, guard: ModelGuard) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._guard = guard

    async def ingest(
        self,
        uploads: Sequence[Upload],
        *,
        collection: str,
        external_ids: Sequence[str | None],
        metadata: dict[str, Any],
    ) -> list[IngestedImage]:
        """Store photos and index their faces; returns once everything is committed and searchable.

        Photos already in the collection are not sent to the embedder again. If the embedder
        rejects any photo, nothing of the request is stored.
        """
        digests = sorted({upload.sha256 for upload in uploads})
        known = {
            record.sha256: record
            for record in await run_in_threadpool(
                self._store.list_images, sha256=digests, collection=collection, limit=len(digests)
            )
        }
        fresh: dict[str, tuple[Upload, str | None]] = {}
        for upload, external_id in zip(uploads, external_ids, strict=True):
            if upload.sha256 not in known:
                fresh.setdefault(upload.sha256, (upload, external_id))
        stored: dict[str, StoredImage] = {}
        if fresh:
            pending = list(fresh.values())
            detected = await self._embedder.detect([upload for upload, _ in pending])
            await self._guard.check(detected)
            new_images = [
                NewImage(upload, collection, external_id, metadata, image)
                for (upload, external_id), image in zip(pending, detected, strict=True)
            ]
            results, faces = await run_in_threadpool(self._store.add_images, new_images)
            # Committed: from here on the photos survive a crash; indexing makes them searchable
            # before we answer (the embedded index is rebuilt from the store if we die first).
            await run_in_threadpool(self._index.add, faces)
            stored = {result.image.sha256: result for result in results}
            log.info("photos ingested", collection=collection, photos=len(results), faces=len(faces))
        answers: list[IngestedImage] = []
        answered: set[str] = set()
        for upload in uploads:
            if upload.sha256 in known:
                record, duplicate = known[upload.sha256], True
            else:
                result = stored[upload.sha256]
                record, duplicate = result.image, result.duplicate or upload.sha256 in answered
            answered.add(upload.sha256)
            answers.append(IngestedImage.model_validate({**asdict(record), "duplicate": duplicate}))
        return answers

    async def get(self, image_id: int) -> ImageRecord:
        record = await run_in_threadpool(self._store.get_image, image_id)
        if record is None:
            raise NotFoundError(f"no image with id {image_id}")
        return record

    async def find(
        self,
        *,
        sha256: Sequence[str],
        collection: str | None,
        external_id: str | None,
        after: int,
        limit: int,
    ) -> list[ImageRecord]:
        return await run_in_threadpool(
            lambda: self._store.list_images(
                sha256=sha256, collection=collection, external_id=external_id, after_id=after, limit=limit
            )
        )

    async def delete(self, image_id: int) -> None:
        if not await run_in_threadpool(self._store.delete_media, image_id, "image"):
            raise NotFoundError(f"no image with id {image_id}")
        await run_in_threadpool(self._index.remove_media, [image_id])
        log.info("photo deleted", image_id=image_id)
