"""The search service's FastAPI application factory (``uvicorn search_service.main:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from facesearch_common.access_http import (
    ACCESS_RESPONSES,
    AllowedHostsMiddleware,
    ApiKeyMiddleware,
    open_paths,
)
from facesearch_common.logging import configure_logging
from facesearch_common.metrics import instrument
from facesearch_common.upload_limit import UploadLimitMiddleware
from search_service.api import collections, health, images, jobs, search, videos, web
from search_service.api.access import SameOriginMiddleware, authorize, record_in_reach
from search_service.api.disk_guard import DiskGuardMiddleware
from search_service.api.errors import error_responses, install_error_handlers
from search_service.services.container import Services
from search_service.settings import SearchSettings, get_settings

log = structlog.get_logger(__name__)

# Room for the multipart framing and the form fields around an uploaded file.
_MULTIPART_OVERHEAD = 64 * 1024

DESCRIPTION = """
Reverse face search over your own photos and videos. Ingest photos with `POST /images`, videos
with `POST /videos` (analysed in the background: follow `GET /jobs/{id}`); search with a photo or a
short video clip at `POST /search`: every face found in the photo (every person in the clip) gets a
ranked list of the stored faces (photos) and people (videos, with the time ranges they appear in)
most like it, with cosine similarity scores and a match flag. Errors are JSON `{"detail": ...}`.

Access: with `SEARCH_API_KEYS` set, every route but `/healthz` needs a key, sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`: a `read` key searches and reads, a `write` key
also ingests and deletes (401 without a valid key, 403 for the wrong scope or collection). A
request whose Host is not in `SEARCH_ALLOWED_HOSTS` is a 400; a state-changing request from a
browser page of another origin (not in `SEARCH_CORS_ORIGINS`) a 403.
"""


def create_app(settings: SearchSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.open(settings)
        app.state.services = services
        log.info(
            "search service ready",
            data_dir=str(settings.data_dir.resolve()),
            index=settings.index_backend,
            faces=services.index.count(),
            embedder=settings.embedder.url,
        )
        scoring = settings.scoring
        cosine_alone = scoring.score_normalization and scoring.normalized_match_threshold is None
        if settings.match_threshold is not None and cosine_alone:
            log.warning(
                "SEARCH_MATCH_THRESHOLD applies to searches ranked by cosine; once the score cohort "
                "fills, searches rank by AS-norm with the model's normalised threshold: set "
                "SEARCH_NORMALIZED_MATCH_THRESHOLD as well, or SEARCH_SCORE_NORMALIZATION=false"
            )
        try:
            yield
        finally:
            await services.close()
            log.info("search service stopped")

    # Every route checks the caller's scope: a route added later is closed by default.
    app = FastAPI(
        title="facesearch",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
    )
    install_error_handlers(app)
    uploads = settings.uploads
    stored_uploads = {
        "/images": uploads.max_request_bytes,
        "/videos": uploads.max_video_bytes + _MULTIPART_OVERHEAD,
    }
    app.add_middleware(
        UploadLimitMiddleware,
        limits={
            **stored_uploads,
            # A photo or a clip: each is held to its own limit while it streams in.
            "/search": max(uploads.max_image_bytes, settings.video.max_query_bytes) + _MULTIPART_OVERHEAD,
        },
    )
    # Uploads that are stored are refused (507) below SEARCH_MIN_FREE_BYTES; a search stores nothing.
    app.add_middleware(DiskGuardMiddleware, upload_paths=stored_uploads.keys())
    instrument(app, ACCESS_RESPONSES)
    access = settings.access
    # Outermost last: the Host is checked first, then CORS answers preflights, then the origin,
    # then the key, before any body is read.
    app.add_middleware(
        ApiKeyMiddleware,
        keys=access.api_keys,
        # The web page holds no data: it asks for a key, then sends it with every API call.
        open_paths=[*open_paths(app), "/"],
        open_prefixes=[f"{web.ASSETS_PATH}/"],
    )
    app.add_middleware(SameOriginMiddleware, allowed_origins=access.cors_origins)
    if access.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=access.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(
        AllowedHostsMiddleware, allowed_hosts=access.allowed_hosts, setting="SEARCH_ALLOWED_HOSTS"
    )
    # ACCESS_RESPONSES describes the 401 (no key, or an unknown one); a key refused here is a 403.
    keyed = {**ACCESS_RESPONSES, **error_responses(403)}
    for module in (images, videos, jobs):
        app.include_router(module.router, dependencies=[Depends(record_in_reach)], responses=keyed)
    for module in (search, collections):
        app.include_router(module.router, responses=keyed)
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount(web.ASSETS_PATH, web.assets(), name="ui")
    return app
