"""Background jobs (video analysis): progress, and cancellation."""

from __future__ import annotations

from fastapi import APIRouter

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses
from search_service.api.schemas import ErrorResponse, IdPath, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "/{job_id}", response_model=Job, summary="A job's state and progress", responses=error_responses(404)
)
async def get_job(services: ServicesDep, job_id: IdPath) -> Job:
    return presenters.job(await services.videos.job(job_id))


@router.delete(
    "/{job_id}",
    response_model=Job,
    summary="Cancel a queued or running job",
    responses={
        409: {"model": ErrorResponse, "description": "The job has already ended."},
        **error_responses(404),
    },
)
async def cancel_job(services: ServicesDep, job_id: IdPath) -> Job:
    """The job is `cancelled` at once; a running one stops at its next batch of frames and nothing
    of it becomes searchable. The video stays (state `cancelled`); upload it again to re-run it."""
    return presenters.job(await services.videos.cancel_job(job_id))
