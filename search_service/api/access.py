"""Access control of the search API: scopes, collections, and browser origins.

Keys are checked by ``ApiKeyMiddleware`` before a body is read; every route then goes through
:func:`authorize`, installed app-wide by main.py, so a route added later is closed by default.
Reading (``GET``, and ``POST /search``) needs a ``read`` key, anything else a ``write`` key. A key
limited to collections may name only those (:meth:`Access.ingest_collection`,
:meth:`Access.filter_collection`), and a record by id in another collection answers 404, as a
missing one does (:func:`record_in_reach`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from facesearch_common.access import AUTH_FAILURES, AuthFailure
from facesearch_common.access import Scope as KeyScope
from facesearch_common.access_http import caller_key
from search_service.api.deps import ServicesDep
from search_service.api.schemas import MAX_ID
from search_service.errors import NotFoundError

log = structlog.get_logger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD"})
# Routes that read although they are POSTed (a query photo is a body).
_READ_POSTS = frozenset({"/search"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CROSS_SITE = "cross-site request refused: its Origin is neither this service nor in SEARCH_CORS_ORIGINS"


@dataclass(frozen=True)
class Access:
    """Which collections the caller may use (keys off: every one); authorize() has checked its scope."""

    collections: frozenset[str] | None  # None: every collection
    key_id: str | None  # None when the service has no keys

    def sees(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def _checked(self, named: str | None) -> str | None:
        """``named`` if this key may use it; a key of exactly one collection names it by default."""
        if self.collections is None:
            return named
        if named is None:
            if len(self.collections) == 1:
                return next(iter(self.collections))
            listed = ", ".join(sorted(self.collections))
            raise self._refused(
                f"this API key is limited to the collections {listed}: name one in `collection`"
            )
        if named not in self.collections:
            raise self._refused(f"this API key may not use the collection {named!r}")
        return named

    def _refused(self, detail: str) -> HTTPException:
        log.info("collection refused", key_id=self.key_id)
        return forbidden("collection", detail)

    def ingest_collection(self, named: str | None, default: str) -> str:
        """The collection an upload goes to: the one named, else the key's only one, else ``default``."""
        return self._checked(named) or default

    def filter_collection(self, named: str | None) -> str | None:
        """The collection a search or listing is limited to; None (every one) only for unlimited keys."""
        return self._checked(named)


_OPEN = Access(collections=None, key_id=None)


def forbidden(reason: AuthFailure, detail: str) -> HTTPException:
    AUTH_FAILURES.labels(reason).inc()
    return HTTPException(403, detail)


def _required_scope(request: Request) -> KeyScope:
    if request.method in _READ_METHODS or _route_path(request) in _READ_POSTS:
        return "read"
    return "write"


def _route_path(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "path", None)


def authorize(request: Request) -> Access:
    """The caller's access (its key was checked by ApiKeyMiddleware); a 403 for the wrong scope."""
    key = caller_key(request)
    if key is None:
        return _OPEN
    needed = _required_scope(request)
    if not key.allows(needed):
        log.info("scope refused", key_id=key.key_id, needed=needed)
        raise forbidden("scope", f"this API key may {key.scope} but not {needed}")
    return Access(collections=key.collections, key_id=key.key_id)


AccessDep = Annotated[Access, Depends(authorize)]


def _path_id(request: Request, name: str) -> int | None:
    """The id in the path, when it is one (anything else is left to the route's own 422)."""
    text = str(request.path_params.get(name, ""))
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


async def record_in_reach(request: Request, access: AccessDep, services: ServicesDep) -> None:
    """404, exactly as for a missing record, when a key limited to collections names a photo,
    video or job by id in another collection: it must not learn that the record exists."""
    if access.collections is None:
        return
    if (image_id := _path_id(request, "image_id")) is not None:
        image = await services.images.get(image_id)
        if not access.sees(image.collection):
            raise NotFoundError(f"no image with id {image_id}")
    if (video_id := _path_id(request, "video_id")) is not None:
        video = await services.videos.get(video_id)
        if not access.sees(video.collection):
            raise NotFoundError(f"no video with id {video_id}")
    if (job_id := _path_id(request, "job_id")) is not None:
        job = await services.videos.job(job_id)
        if not access.sees((await services.videos.get(job.video_id)).collection):
            raise NotFoundError(f"no job with id {job_id}")


class SameOriginMiddleware:
    """403 for a state-changing request a browser sends from another site (a cross-site form POST).

    A browser names the page's origin in ``Origin`` (or at least says ``Sec-Fetch-Site:
    cross-site``); the request passes when that origin is the service's own (its host and port
    are the request's Host) or one of ``SEARCH_CORS_ORIGINS``. Clients that are no browser send
    neither header and pass. This holds with keys off, where a key cannot.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Collection[str]) -> None:
        self.app = app
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)

    def _cross_site(self, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site") == "cross-site"
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins:
            return False
        # "null" (a sandboxed page, a file) has no host and matches nothing.
        _, _, netloc = origin.partition("://")
        return not netloc or netloc != headers.get("host", "").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cross_site = (
            scope["type"] == "http"
            and scope["method"] in _STATE_CHANGING
            and self._cross_site(Headers(scope=scope))
        )
        if cross_site:
            AUTH_FAILURES.labels("origin").inc()
            await JSONResponse({"detail": _CROSS_SITE}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
