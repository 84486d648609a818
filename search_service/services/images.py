"""Photo ingest (deduplicated by content within a collection), lookup, thumbnails and deletion."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from PIL import Image, ImageOps

from facesearch_common.imaging import DECODE_ERRORS, rgb_image, unsigned_32_bit
from search_service.domain import ImageRecord, NewImage, StoredImage, Thumbnail, Upload
from search_service.errors import EmbedderRejectedError, NotFoundError, UndecodableImageError
from search_service.index.base import FaceIndex
from search_service.services.faces import FaceDetector
from search_service.services.lookup import found
from search_service.storage.images import ImageRepository

log = structlog.get_logger(__name__)

# Small enough for a grid, large enough that faces stay recognisable at that size.
THUMBNAIL_QUALITY = 80
# A full-size photo decodes into memory (a 40-megapixel PNG: 120 MB): at most this many at once.
_THUMBNAIL_SLOTS = os.cpu_count() or 1
# A stored photo that does not render: malformed bytes, or more pixels than Pillow's bomb guard allows.
_RENDER_ERRORS: tuple[type[BaseException], ...] = (*DECODE_ERRORS, Image.DecompressionBombError)


def thumbnail_etag(sha256: str, max_side: int) -> str:
    """One per stored file and size: the stored bytes never change under an id."""
    return f'"{sha256}-{max_side}"'


def render_thumbnail(path: Path, max_side: int) -> bytes:
    """The photo upright (EXIF-rotated, as the embedder saw it, so that face boxes fit), scaled to
    fit ``max_side`` (never up), as JPEG; its colours as the embedder converts them (wide
    greyscale scaled to 8 bits, not clipped to white)."""
    with Image.open(path) as image:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale at once: far faster than decoding, then shrinking.
        image.draft("RGB", (max_side, max_side))
        unsigned = unsigned_32_bit(image)
        upright = ImageOps.exif_transpose(image)
        # Before scaling: Pillow resizes none of the 16-bit greyscale modes, and a palette image
        # would be resized nearest-neighbour.
        upright = rgb_image(upright, unsigned_32=unsigned)
        upright.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        upright.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


class ImagesService:
    def __init__(self, images: ImageRepository, index: FaceIndex, detector: FaceDetector) -> None:
        self._images = images
        self._index = index
        self._detector = detector
        self._thumbnail_slots = asyncio.Semaphore(_THUMBNAIL_SLOTS)

    async def ingest(
        self,
        uploads: Sequence[Upload],
        *,
        collection: str,
        external_ids: Sequence[str | None],
        metadata: dict[str, Any],
    ) -> list[StoredImage | EmbedderRejectedError]:
        """Store photos and index their faces; returns once everything is committed and searchable,
        one entry per upload, in order: the stored photo, or the embedder's verdict on it.

        Photos already in the collection are not sent to the embedder again. A photo the embedder
        refuses fails only itself; when it refuses every photo of the request (and none is a
        duplicate), nothing is stored and the first refusal is raised. Any other failure (the
        embedder unavailable, another model) fails the whole request, and nothing is stored.
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
        refused: dict[str, EmbedderRejectedError] = {}
        if fresh:
            pending = list(fresh.values())
            outcomes = await self._detector.detect_each([upload for upload, _ in pending])
            new_images = []
            for (upload, external_id), outcome in zip(pending, outcomes.images, strict=True):
                if isinstance(outcome, EmbedderRejectedError):
                    refused[upload.sha256] = outcome
                else:
                    new_images.append(NewImage(upload, collection, external_id, metadata, outcome))
            if not new_images and not known:
                raise refused[uploads[0].sha256]
            if new_images:
                results, faces = await asyncio.to_thread(self._images.add, new_images)
                # Committed: from here on the photos survive a crash; indexing makes them searchable
                # before we answer (the index is reconciled with the store if we die first).
                await asyncio.to_thread(self._index.add, faces)
                stored = {result.image.sha256: result for result in results}
                log.info("photos ingested", collection=collection, photos=len(results), faces=len(faces))
            if refused:
                log.info("photos refused", collection=collection, photos=len(refused))
        answers: list[StoredImage | EmbedderRejectedError] = []
        answered: set[str] = set()
        for upload in uploads:
            answer: StoredImage | EmbedderRejectedError
            if upload.sha256 in known:
                answer = StoredImage(known[upload.sha256], duplicate=True)
            elif upload.sha256 in refused:
                answer = refused[upload.sha256]
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

    async def thumbnail(self, image_id: int, max_side: int, cached: Collection[str] = ()) -> Thumbnail:
        """The photo scaled to fit ``max_side``, made on request (a browser caches it); none when its
        ETag is among ``cached`` (the client's If-None-Match). Raises UndecodableImageError when the
        stored file no longer decodes."""
        record = await self.get(image_id)
        etag = thumbnail_etag(record.sha256, max_side)
        if etag in cached:
            return Thumbnail(etag, None)
        async with self._thumbnail_slots:
            try:
                jpeg = await asyncio.to_thread(render_thumbnail, self._images.file(record), max_side)
            except _RENDER_ERRORS as error:
                log.warning("stored photo does not decode", image_id=image_id, error=repr(error))
                raise UndecodableImageError(
                    f"the stored photo {image_id} ({record.filename}) does not decode: {error}"
                ) from error
        return Thumbnail(etag, jpeg)

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
