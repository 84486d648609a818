"""Refuse uploads while the data directory's disk is below its free-space floor, before the body.

A plain ASGI middleware rather than a route dependency: FastAPI reads a form body (``POST /images``)
before any dependency runs, and an upload that cannot be stored should not be received first. It
answers 507 with ``{"detail": ...}`` (free bytes, the floor) when less than ``SEARCH_MIN_FREE_BYTES``
would stay free after the upload's declared ``Content-Length``. Searching stores nothing and is not
held to the floor; writes that still meet a full disk are refused by storage (also a 507).
"""

from __future__ import annotations

from collections.abc import Collection

import structlog
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from facesearch_common.upload_limit import declared_length
from search_service.api import presenters
from search_service.services.container import Services

log = structlog.get_logger(__name__)


class DiskGuardMiddleware:
    def __init__(self, app: ASGIApp, upload_paths: Collection[str]) -> None:
        """``upload_paths``: the exact paths whose POSTed bodies are stored."""
        self.app = app
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.upload_paths:
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        space = services.disk_space()
        # Absent or unreadable: 0 here (the upload limits judge such a body as it streams in).
        incoming = declared_length(Headers(scope=scope)) or 0
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
