"""The embedder's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from embedder_service.api.admission import AdmissionMiddleware
from embedder_service.api.routes import router
from embedder_service.models.session import GpuRequiredError
from embedder_service.service import EmbedderService
from embedder_service.settings import EmbedderSettings, get_settings
from facesearch_common.access import ApiKey
from facesearch_common.access_http import (
    ACCESS_RESPONSES,
    AllowedHostsMiddleware,
    ApiKeyMiddleware,
    open_paths,
)
from facesearch_common.logging import configure_logging
from facesearch_common.metrics import instrument
from facesearch_common.upload_limit import UploadLimitMiddleware

log = structlog.get_logger(__name__)


def create_app(settings: EmbedderSettings | None = None, service: EmbedderService | None = None) -> FastAPI:
    """The embedder app; ``service`` replaces the one built at start-up from ``settings.models_dir``.

    An injected service brings its own settings, which then also size the upload limits.
    """
    if service is not None:
        if settings is not None and settings != service.settings:
            raise ValueError("create_app: pass the settings or a service built with them, not both")
        settings = service.settings
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            ready = (
                service
                if service is not None
                else await run_in_threadpool(EmbedderService.from_models, settings)
            )
            await run_in_threadpool(ready.warm_up)
        except GpuRequiredError as error:
            # One line that says why, before the server's traceback; the server then exits non-zero.
            log.error("embedder not started", reason=str(error))
            raise
        app.state.service = ready
        log.info("embedder ready", models_dir=str(settings.models_dir), providers=ready.providers())
        yield
        if service is None:  # an injected service belongs to its caller, who closes it
            await run_in_threadpool(ready.close)

    app = FastAPI(
        title="facesearch embedder",
        version="0.1.0",
        description=(
            "MTCNN face detection and face embeddings on ONNX Runtime (CUDA where present, CPU otherwise)."
        ),
        lifespan=lifespan,
    )
    instrument(app, ACCESS_RESPONSES)
    # Room for the multipart framing around each image.
    app.add_middleware(
        UploadLimitMiddleware,
        limits={"/faces": (settings.max_upload_bytes + 64 * 1024) * settings.max_images_per_request},
    )
    app.add_middleware(AdmissionMiddleware, settings=settings)  # answers a full queue before reading
    # With a key set, every route but health and the docs needs it (reached only by the search service).
    keys = [] if settings.api_key is None else [ApiKey(secret=settings.api_key, scope="write")]
    app.add_middleware(ApiKeyMiddleware, keys=keys, open_paths=open_paths(app))
    # Outermost: a request for another Host is refused before anything else looks at it.
    app.add_middleware(
        AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts, setting="EMBEDDER_ALLOWED_HOSTS"
    )
    app.include_router(router)
    return app
