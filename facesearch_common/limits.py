"""Rejecting oversized request bodies before they are read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse


def limit_body_size(app: FastAPI, max_bytes: int) -> None:
    """Answers 413 when Content-Length announces more than ``max_bytes``.

    Per-file limits are still checked while reading each part; this stops a client from
    making the server spool a huge multipart body to disk first.
    """

    @app.middleware("http")
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return JSONResponse(
                {"detail": f"request body of {length} bytes is over the {max_bytes}-byte limit"},
                status_code=413,
            )
        return await call_next(request)
