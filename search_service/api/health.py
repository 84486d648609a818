"""Liveness, with the state of the index and the reachability of the embedder."""

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
    """200 while the index serves, even with the embedder down (`status: degraded`): stored
    data stays readable and a restart would not help. 503 when the index cannot serve."""
    report = await services.health()
    health = presenters.health(report)
    if not report.index_ok:
        return JSONResponse(health.model_dump(), status_code=503)
    return health
