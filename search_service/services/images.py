"""Photo ingest (deduplicated by content within a collection), lookup and deletion."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from search_service.domain import ImageRecord, NewImage, StoredImage, Upload
from search_service.errors import NotFoundError
from search_service.index.base import FaceIndex
from search_service.services.faces import FaceDetector
from search_service.services.lookup import found
from search_service.storage.images import ImageRepository

log = structlog.get_logger(__name__)


class ImagesService:
    def __init__(self, images: ImageRepository, index: FaceIndex, detector: FaceDetector) -> None:
        self._images = images
        self._index = index
        self._detector = detector

    async def ingest(
        self,
        uploads: Sequence[Upload],
        *,
        collection: str,
        external_ids: Sequence[str | None],
        metadata: dict[str, Any],
    ) -> list[StoredImage]:
        """Store photos and index their faces; returns once everything is committed and searchable,
        one entry per upload, in order.

        Photos already in the collection are not sent to the embedder again. If the embedder
        rejects any photo, nothing of the request is stored.
        """
        digests = sorted({upload.sha256 for upload in uploads})
        known = {
            record.sha256: record
            for record in await asyncio.to_thread(
                self._images.find, sha256=digests, collection=collection, limit=len(digests)
            )
        }
        fresh: dict[str, tuple[Upload, str | None]] = {}
        for upload, external_id in zip(uploads, external_ids, strict=True):
            if upload.sha256 not in known:
                fresh.setdefault(upload.sha256, (upload, external_id))
        stored: dict[str, StoredImage] = {}
        if fresh:
            pending = list(fresh.values())
            detection = await self._detector.detect([upload for upload, _ in pending])
            new_images = [
                NewImage(upload, collection, external_id, metadata, image)
                for (upload, external_id), image in zip(pending, detection.images, strict=True)
            ]
            results, faces = await asyncio.to_thread(self._images.add, new_images)
            # Committed: from here on the photos survive a crash; indexing makes them searchable
            # before we answer (the index is reconciled with the store if we die first).
            await asyncio.to_thread(self._index.add, faces)
            stored = {result.image.sha256: result for result in results}
            log.info("photos ingested", collection=collection, photos=len(results), faces=len(faces))
        answers: list[StoredImage] = []
        answered: set[str] = set()
        for upload in uploads:
            if upload.sha256 in known:
                answer = StoredImage(known[upload.sha256], duplicate=True)
            else:
                answer = stored[upload.sha256]
                if upload.sha256 in answered:  # the same bytes twice in one request
                    answer = replace(answer, duplicate=True)
            answered.add(upload.sha256)
            answers.append(answer)
        return answers

    async def get(self, image_id: int) -> ImageRecord:
        return found(await asyncio.to_thread(self._images.get, image_id), f"no image with id {image_id}")

    async def file(self, image_id: int) -> tuple[Path, str]:
        """The stored photo's path and content type."""
        record = await self.get(image_id)
        return self._images.file(record), record.content_type

    async def find(
        self,
        *,
        sha256: Sequence[str],
        collection: str | None,
        external_id: str | None,
        after: int,
        limit: int,
    ) -> list[ImageRecord]:
        return await asyncio.to_thread(
            self._images.find,
            sha256=sha256,
            collection=collection,
            external_id=external_id,
            after_id=after,
            limit=limit,
        )

    async def delete(self, image_id: int) -> None:
        if not await asyncio.to_thread(self._images.delete, image_id):
            raise NotFoundError(f"no image with id {image_id}")
        await asyncio.to_thread(self._index.remove_media, [image_id])
        log.info("photo deleted", image_id=image_id)
