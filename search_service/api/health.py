"""Liveness, with the state of the index, the reachability of the embedder and the free disk space."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.schemas import Health

router = APIRouter(tags=["ops"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health",
    responses={503: {"model": Health, "description": "The index cannot serve."}},
)
async def healthz(services: ServicesDep) -> Health | JSONResponse:
    """200 while the index serves, even with the embedder down or the disk below its free-space
    floor (`status: degraded`, the reasons in `problems`): stored data stays readable and deletable,
    and a restart would not help. 503 when the index cannot serve."""
    report = await services.health()
    health = presenters.health(report)
    if not report.index_ok:
        return JSONResponse(health.model_dump(), status_code=503)
    return health
