"""The HTTP side of access control, the same for both services: the Host allow-list and API keys.

Keys, scopes and their parsing live in the framework-free ``facesearch_common.access``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from facesearch_common.access import AUTH_FAILURES, ApiKey, AuthFailure, find_key, host_allowed

log = structlog.get_logger(__name__)

# Open to everyone whatever the keys and the Host: orchestrators probe it; it holds no stored data.
HEALTH_PATH = "/healthz"

# What every route behind the Host and key checks may answer, for its OpenAPI entry (`/healthz` is
# behind neither).
ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request's Host is not in the service's allow-list (`*_ALLOWED_HOSTS`)."},
    401: {"description": "Keys are configured and the request sent none, or an unknown one."},
}


def open_paths(app: FastAPI) -> list[str]:
    """What needs no key in either service: health, and the API docs (they hold no stored data)."""
    docs = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    return [HEALTH_PATH, *(path for path in docs if path)]


_STATE_KEY = "api_key"
_UNAUTHORIZED: dict[AuthFailure, str] = {
    "missing_key": "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
    "unknown_key": "unknown API key",
}


def _presented_key(headers: Headers) -> str | None:
    """The key sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (the token wins)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def caller_key(request: Request) -> ApiKey | None:
    """The key :class:`ApiKeyMiddleware` accepted for this request; None where none was needed."""
    key: ApiKey | None = request.scope["state"][_STATE_KEY]
    return key


class ApiKeyMiddleware:
    """401 (JSON, ``WWW-Authenticate: Bearer``) for a request that presents none of ``keys``.

    A middleware rather than a FastAPI dependency: FastAPI reads a form body before it runs the
    route's dependencies, so an unauthenticated upload would be read whole before its 401. The
    accepted key goes to the request's state (:func:`caller_key`), for the routes' own checks of
    scope. ``open_paths`` (health, the API docs) need no key, nor paths that start with one of
    ``open_prefixes`` (a folder of static files); with no keys, no path does.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[ApiKey],
        open_paths: Collection[str],
        open_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        self.keys = list(keys)
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = None
        if self.keys and not self._open(scope["path"]):
            presented = _presented_key(Headers(scope=scope))
            key = None if presented is None else find_key(self.keys, presented)
            if key is None:
                reason: AuthFailure = "missing_key" if presented is None else "unknown_key"
                if presented is not None:
                    log.info("unknown API key refused")
                AUTH_FAILURES.labels(reason).inc()
                refusal = JSONResponse(
                    {"detail": _UNAUTHORIZED[reason]}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
        scope.setdefault("state", {})[_STATE_KEY] = key
        await self.app(scope, receive, send)


class AllowedHostsMiddleware:
    """Answer a request whose Host header is not allowed with a JSON 400 (against DNS rebinding).

    Starlette's TrustedHostMiddleware does the same check but answers in plain text, which breaks
    the services' ``{"detail": ...}`` error shape. ``/healthz`` is not checked: a probe may
    address the service by an IP the list does not name.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str], setting: str) -> None:
        """``setting``: the environment variable that lists the hosts, named in the refusal."""
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.detail = f"this Host is not served here; allowed hosts are set by {setting}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH:
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host, self.allowed_hosts):
                AUTH_FAILURES.labels("host").inc()
                await JSONResponse({"detail": self.detail}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
