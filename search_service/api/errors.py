"""The one map from the service's errors to HTTP: statuses, the handler, and their OpenAPI text.

Every error reaches the client as FastAPI's shape, ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from search_service.api.schemas import ErrorResponse, InvalidRequestResponse
from search_service.errors import (
    ConflictError,
    EmbedderProtocolError,
    EmbedderRejectedError,
    EmbedderUnavailableError,
    IndexUnavailableError,
    InsufficientStorageError,
    ModelMismatchError,
    NoFaceError,
    NotAVideoError,
    NotFoundError,
    RejectionReason,
    ServiceError,
    ShuttingDownError,
    UndecodableImageError,
    UploadTooLargeError,
)

_STATUSES: dict[type[ServiceError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ModelMismatchError: 409,
    UploadTooLargeError: 413,
    NotAVideoError: 415,
    UndecodableImageError: 415,
    NoFaceError: 422,
    EmbedderProtocolError: 502,
    EmbedderUnavailableError: 503,
    IndexUnavailableError: 503,
    ShuttingDownError: 503,
    InsufficientStorageError: 507,
}
# The embedder's verdict on an upload reaches the client with the status the embedder gave it.
_REJECTION_STATUSES: dict[RejectionReason, int] = {
    "unreadable": 400,
    "too_large": 413,
    "unsupported": 415,
    "invalid": 422,
}


def status_of(error: ServiceError) -> int:
    if isinstance(error, EmbedderRejectedError):
        return _REJECTION_STATUSES[error.reason]
    for kind in type(error).__mro__:
        if kind in _STATUSES:
            return _STATUSES[kind]
    return 500


# What a 503 tells clients to wait, in seconds: the embedder's health probe (every second by
# default) closes the circuit within that once it answers again.
RETRY_AFTER_S = 5
_RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}


async def _service_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    status = status_of(error)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"detail": error.detail}, status_code=status, headers=headers)


# A 422 echoes each invalid value back (FastAPI's shape); a huge one is cut to this many characters.
MAX_ECHOED_CHARS = 256


def _shortened(text: str) -> str:
    if len(text) <= MAX_ECHOED_CHARS:
        return text
    return f"{text[:MAX_ECHOED_CHARS]}... ({len(text)} characters)"


def _echo(value: Any) -> Any:
    """``value`` as a 422 may echo it: JSON-safe (no NaN, no undecodable bytes) and short."""
    if isinstance(value, str):
        return _shortened(value)
    try:
        encoded = jsonable_encoder(value)
        text = json.dumps(encoded, allow_nan=False)
    except (TypeError, ValueError):  # NaN or Infinity, bytes that are no UTF-8
        encoded = text = repr(value)
    return encoded if len(text) <= MAX_ECHOED_CHARS else _shortened(text)


async def _invalid_request(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's own 422, with every echoed input made safe to send (see ``_echo``)."""
    assert isinstance(error, RequestValidationError)
    errors = [
        {**entry, "input": _echo(entry["input"])} if "input" in entry else entry for entry in error.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)


_DESCRIPTIONS = {
    400: "A body that is not well-formed multipart/form-data, or a photo the embedder could not read "
    "(corrupt or truncated; named in `detail`).",
    403: "The API key may not do this (a read key writing, or another collection), or a browser "
    "page of another origin sent a state-changing request.",
    404: "No such id.",
    409: "The embedder runs another model than the one this index was built with.",
    413: "Upload too large: the whole body, or one photo (named in `detail`); a query clip over its "
    "size or length limit.",
    415: "Not an image format the embedder reads, or an uploaded video or query clip that is no "
    "decodable video (file named in `detail`); a thumbnail of a stored photo that no longer decodes.",
    422: "Invalid parameters (search: not exactly one of `image`, `video` and `face_id`), or no face in "
    "the query photo or clip.",
    502: "The embedder answered something unexpected.",
    503: "The embedder or the index is unreachable or failing; retry later.",
    507: "The data directory's disk is full, or (uploads) below its free-space floor "
    "(`SEARCH_MIN_FREE_BYTES`): nothing was changed; free space (deleting stored media frees it), then "
    "retry.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the errors a route can answer with, all shaped {"detail": ...}."""
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "model": InvalidRequestResponse if code == 422 else ErrorResponse,
            **({"headers": _RETRY_AFTER_HEADER} if code == 503 else {}),
        }
        for code in codes
    }


def invalid_parameter(location: tuple[str, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks that span several fields."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message, "input": value}])
