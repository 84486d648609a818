"""Refuse oversized upload bodies while they stream in, with a JSON 413.

FastAPI's own ``max_body_size`` answers a request whose Content-Length is over the limit in plain
text, which breaks the API's ``{"detail": ...}`` error shape; this middleware keeps that shape.
A declared Content-Length over the limit is refused before any byte is read; a chunked body is
counted as it arrives and refused at the first byte over.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes for this endpoint"


def declared_length(headers: Headers) -> int | None:
    """The body's declared Content-Length; None when absent or not a number (then it is counted)."""
    value = headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        """``limits``: maximum body bytes by exact path (upload endpoints have no path parameters)."""
        self.app = app
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = declared_length(Headers(scope=scope))
        if declared is not None and declared > limit:
            await JSONResponse({"detail": _too_large(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the body parser: FastAPI re-raises HTTPExceptions from there,
                    # and the app's handler renders it as {"detail": ...}.
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counting_receive, send)
