"""Liveness, with the state of the index and the reachability of the embedder."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from search_service.api.deps import ServicesDep
from search_service.api.schemas import EmbedderStatus, Health, IndexStatus

router = APIRouter(tags=["ops"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health",
    responses={503: {"model": Health, "description": "The index cannot serve."}},
)
async def healthz(services: ServicesDep) -> Health | JSONResponse:
    """200 while the index serves, even with the embedder down (`status: degraded`): stored
    data stays readable and a restart would not help. 503 when the index cannot serve."""
    index = await services.index_health()
    embedder = await services.embedder.status()
    model = embedder.model
    health = Health(
        status="down" if not index.ok else "degraded" if model is None else "ok",
        index=IndexStatus(backend=index.backend, ok=index.ok, faces=index.faces, details=index.details),
        embedder=EmbedderStatus(
            url=services.embedder.url,
            ok=model is not None,
            model=model.name if model else None,
            dimension=model.dimension if model else None,
            match_threshold=embedder.match_threshold,
            error=embedder.problem,
        ),
    )
    if not index.ok:
        return JSONResponse(health.model_dump(), status_code=503)
    return health
