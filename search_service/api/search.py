"""Search by photo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses
from search_service.api.schemas import SearchParams, SearchResponse
from search_service.api.uploads import read_upload
from search_service.domain import SearchQuery, Source

_SOURCES: dict[str, Source | None] = {"images": "image", "videos": "video", "all": None}

router = APIRouter(tags=["search"])


def search_params(
    query: Annotated[SearchParams, Query()], form: Annotated[SearchParams, Form()]
) -> SearchParams:
    """Options may come as query parameters or as form fields; a form field wins."""
    return SearchParams.model_validate(
        query.model_dump(exclude_unset=True) | form.model_dump(exclude_unset=True)
    )


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Find stored faces like each face in a photo",
    responses=error_responses(400, 409, 413, 415, 422, 502, 503),
)
async def search(
    services: ServicesDep,
    image: Annotated[UploadFile, File(description="The query photo.")],
    params: Annotated[SearchParams, Depends(search_params)],
) -> SearchResponse:
    """Every face found in the photo gets its own list of up to `k` hits, best first, each with
    its cosine similarity and whether that reaches the match threshold (`threshold`; by default
    the one calibrated for the embedding model). `collection` and `source` (images, videos, all) filter
    exactly. A photo without a face is a 422."""
    upload = await read_upload(image, services.settings.uploads.max_image_bytes)
    query = SearchQuery(
        k=params.k, threshold=params.threshold, collection=params.collection, source=_SOURCES[params.source]
    )
    return presenters.search_response(await services.search.search(upload, query))
