"""Refuse uploads while the data directory's disk is below its free-space floor, before the body.

A plain ASGI middleware rather than a route dependency: FastAPI reads a form body (``POST /images``)
before any dependency runs, and an upload that cannot be stored should not be received first. It
answers 507 with ``{"detail": ...}`` (free bytes, the floor) when less than ``SEARCH_MIN_FREE_BYTES``
would stay free after the upload's declared ``Content-Length``. Searching stores nothing and is not
held to the floor; writes that still meet a full disk are refused by storage (also a 507).
"""

from __future__ import annotations

import structlog
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from search_service.api import presenters
from search_service.services.container import Services

log = structlog.get_logger(__name__)

UPLOAD_PATHS = frozenset({"/images", "/videos"})


class DiskGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        space = services.disk_space()
        incoming = _declared_length(Headers(scope=scope))
        if space.free_bytes - incoming >= space.min_free_bytes:
            await self.app(scope, receive, send)
            return
        log.warning(
            "upload refused: disk below its free-space floor",
            path=scope["path"],
            free_bytes=space.free_bytes,
            min_free_bytes=space.min_free_bytes,
            content_length=incoming,
        )
        detail = presenters.disk_refusal(space, incoming)
        await JSONResponse({"detail": detail}, status_code=507)(scope, receive, send)


def _declared_length(headers: Headers) -> int:
    """The body's declared length; 0 when absent or unreadable (the upload limits judge those)."""
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else 0
