"""Reading uploaded photos: bounded in size, hashed, typed by their bytes."""

from __future__ import annotations

import asyncio
import hashlib
import io

from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from search_service.domain import StagedFile, Upload
from search_service.errors import UploadTooLargeError


def _content_type(data: bytes, declared: str | None) -> str:
    """The stored photo's type as its bytes say (clients often send application/octet-stream).

    Only the header is read. A header declaring more pixels than Pillow's bomb guard allows raises
    DecompressionBombError (no OSError): the declared type stands, and the embedder, which owns the
    pixel limit, judges the photo (a 413 naming it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        mime = None
    return mime or declared or "application/octet-stream"


def _upload(name: str, data: bytes, declared_type: str | None) -> Upload:
    return Upload(name, data, hashlib.sha256(data).hexdigest(), _content_type(data, declared_type))


async def read_upload(file: UploadFile, max_bytes: int) -> Upload:
    """Read one uploaded photo; the body limit already bounded it, this bounds each photo."""
    name = file.filename or "upload"
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLargeError(f"{name}: photo exceeds the limit of {max_bytes} bytes")
    # Hashing 25 MB takes tens of milliseconds: not on the event loop.
    return await asyncio.to_thread(_upload, name, data, file.content_type)


def _staged_upload(staged: StagedFile) -> Upload:
    data = staged.path.read_bytes()
    return Upload(staged.filename, data, staged.sha256, _content_type(data, staged.content_type))


async def read_staged(staged: StagedFile) -> Upload:
    """A photo that streamed into a staging file (bounded there), read into memory."""
    return await asyncio.to_thread(_staged_upload, staged)
