"""The search service's FastAPI application factory (``uvicorn search_service.main:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from facesearch_common.logging import configure_logging
from facesearch_common.metrics import instrument
from facesearch_common.upload_limit import UploadLimitMiddleware
from search_service.api import collections, health, images, jobs, search, videos
from search_service.api.errors import install_error_handlers
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
        try:
            yield
        finally:
            await services.close()
            log.info("search service stopped")

    app = FastAPI(title="facesearch", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    uploads = settings.uploads
    app.add_middleware(
        UploadLimitMiddleware,
        limits={
            "/images": uploads.max_request_bytes,
            # A photo or a clip: each is held to its own limit while it streams in.
            "/search": max(uploads.max_image_bytes, settings.video.max_query_bytes) + _MULTIPART_OVERHEAD,
            "/videos": uploads.max_video_bytes + _MULTIPART_OVERHEAD,
        },
    )
    instrument(app)
    for module in (images, videos, jobs, search, collections, health):
        app.include_router(module.router)
    return app
