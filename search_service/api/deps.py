"""Dependencies the routers share: the open services and upload reading."""

from __future__ import annotations

import hashlib
import io
from typing import Annotated, Any

from fastapi import Depends, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from search_service.domain import Upload
from search_service.errors import UploadTooLargeError
from search_service.schemas import ErrorResponse, InvalidRequestResponse
from search_service.services.container import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _content_type(data: bytes, declared: str | None) -> str:
    """The stored photo's type as its bytes say (clients often send application/octet-stream)."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            mime = Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError):
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
    return await run_in_threadpool(_upload, name, data, file.content_type)


_ERROR_DESCRIPTIONS = {
    400: "The embedder could not read the photo (named in `detail`).",
    404: "No such id.",
    409: "The embedder runs another model than the one this index was built with.",
    413: "Upload too large: the whole body, or one photo (named in `detail`).",
    415: "Not an image format the embedder reads (file named in `detail`).",
    422: "Invalid parameters, or no face in the query photo.",
    502: "The embedder answered something unexpected.",
    503: "The embedder is unreachable or failing; retry later.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the errors a route can answer with, all shaped {"detail": ...}."""
    return {
        code: {
            "description": _ERROR_DESCRIPTIONS[code],
            "model": InvalidRequestResponse if code == 422 else ErrorResponse,
        }
        for code in codes
    }


def invalid_parameter(location: tuple[str, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks that span several fields."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message, "input": value}])
