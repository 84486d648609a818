"""Admission control for ``POST /faces``: a bounded number of requests at once, each with a deadline.

A pure ASGI middleware, so that a request over the bound is answered before its body is read
or parsed: turning it away costs no upload, no decode and no thread.
"""

from __future__ import annotations

import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from embedder_service.limits import Deadline
from embedder_service.settings import EmbedderSettings
from embedder_service.telemetry import REQUESTS_ADMITTED, REQUESTS_REJECTED

ADMITTED_PATHS = frozenset({"/faces"})


class AdmissionMiddleware:
    """Admits at most ``settings.max_queued_requests`` model requests at once, queued or running;
    answers the others 503 with ``Retry-After``, and gives each admitted one its deadline."""

    def __init__(self, app: ASGIApp, settings: EmbedderSettings) -> None:
        self.app = app
        self.settings = settings
        # Only the event loop's thread touches it, between awaits: no lock needed.
        self._admitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ADMITTED_PATHS:
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        limit = self.settings.max_queued_requests
        if self._admitted >= limit:
            REQUESTS_REJECTED.labels("queue_full").inc()
            response = JSONResponse(
                {"detail": f"the embedder is busy: {limit} requests are already queued or running"},
                status_code=503,
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
            await response(scope, receive, send)
            return
        self._admitted += 1
        REQUESTS_ADMITTED.inc()
        scope.setdefault("state", {})["deadline"] = Deadline.after(self.settings.request_deadline_s, arrived)
        try:
            await self.app(scope, receive, send)
        finally:
            self._admitted -= 1
            REQUESTS_ADMITTED.dec()
