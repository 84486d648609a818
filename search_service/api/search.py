"""Search by photo or by video clip."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses
from search_service.api.schemas import COLLECTION_PATTERN, DEFAULT_K, MAX_K, SearchParams, SearchResponse
from search_service.api.uploads import read_staged
from search_service.api.video_upload import receive_one_of
from search_service.domain import SearchQuery, Source

_SOURCES: dict[str, Source | None] = {"images": "image", "videos": "video", "all": None}

router = APIRouter(tags=["search"])

# The body is parsed by hand (a clip streams to a staging file, see video_upload), so OpenAPI is
# told its shape here. Exactly one of `image` and `video`: the route checks it (422 otherwise).
_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "The query photo. Send this or `video`, not both.",
                        },
                        "video": {
                            "type": "string",
                            "format": "binary",
                            "description": "A query clip, instead of a photo: at most "
                            "`SEARCH_VIDEO_MAX_QUERY_SECONDS` long (60 s by default) and "
                            "`SEARCH_VIDEO_MAX_QUERY_BYTES` large.",
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
                        "threshold": {"type": "number", "minimum": -1.0, "maximum": 1.0},
                        "collection": {"type": "string", "pattern": COLLECTION_PATTERN},
                        "source": {"type": "string", "enum": ["images", "videos", "all"], "default": "all"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Find stored faces like each face in a photo, or each person in a video clip",
    openapi_extra=_SEARCH_BODY,
    responses=error_responses(400, 409, 413, 415, 422, 502, 503),
)
async def search(
    services: ServicesDep, request: Request, query_params: Annotated[SearchParams, Query()]
) -> SearchResponse:
    """Send a photo as `image`, or a short clip as `video`. Every face found in the photo, or
    every person found in the clip (as video ingest finds them; with the clip's `time_ranges`
    where they appear, `best_time` and a `thumbnail_url` of their clearest face), gets its own
    list of up to `k` hits, best first, each with its cosine similarity and whether that reaches
    the match threshold (`threshold`; by default the one calibrated for the embedding model).
    `collection` and `source` (images, videos, all) filter exactly; they may also come as form
    fields, which win. Nothing of the query is stored.

    A photo or clip without a face is a 422, as is sending both `image` and `video` or neither.
    A clip longer than `SEARCH_VIDEO_MAX_QUERY_SECONDS` (judged from its container before it is
    decoded) or larger than `SEARCH_VIDEO_MAX_QUERY_BYTES` is a 413; one that is no decodable
    video (corrupt, audio only, a still image) a 415. A clip is analysed while the request waits:
    a few seconds per minute of 720p video."""
    settings = services.settings
    field, staged, form = await receive_one_of(
        request,
        file_fields={"image": settings.uploads.max_image_bytes, "video": settings.video.max_query_bytes},
        form_model=SearchParams,
        staging=services.videos.staging_file,
    )
    try:
        params = SearchParams.model_validate(
            query_params.model_dump(exclude_unset=True) | form.model_dump(exclude_unset=True)
        )
        query = SearchQuery(
            k=params.k,
            threshold=params.threshold,
            collection=params.collection,
            source=_SOURCES[params.source],
        )
        if field == "video":
            result = await services.search.search_clip(staged.path, staged.filename, query)
        else:
            result = await services.search.search(await read_staged(staged), query)
    finally:
        # Not awaited: a cancelled request (the client went away) must still remove it.
        staged.path.unlink(missing_ok=True)
    return presenters.search_response(result)
