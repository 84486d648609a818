"""Background jobs (video analysis): progress, and cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from search_service.api import presenters
from search_service.api.access import AccessDep
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses
from search_service.api.schemas import COLLECTION_PATTERN, MAX_ID, ErrorResponse, IdPath, Job, JobList
from search_service.domain import JobState

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=JobList, summary="List jobs, by state")
async def list_jobs(
    services: ServicesDep,
    access: AccessDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    collection: Annotated[
        str | None, Query(pattern=COLLECTION_PATTERN, description="Only jobs of videos in this collection.")
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Return jobs with ids above this (paging).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """Oldest first (ascending id), as the other listings; each job as `GET /jobs/{id}` shows it.
    `state=running` and `state=queued` show what the workers are busy with."""
    records = await services.videos.find_jobs(
        state=state, collection=access.filter_collection(collection), after=after, limit=limit
    )
    return presenters.job_list(records, limit)


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
