"""Search by photo, by video clip, or by a stored face."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from search_service.api import presenters
from search_service.api.access import AccessDep
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses, invalid_parameter
from search_service.api.schemas import (
    COLLECTION_PATTERN,
    DEFAULT_K,
    MAX_ID,
    MAX_K,
    SearchParams,
    SearchResponse,
)
from search_service.api.uploads import read_staged
from search_service.api.video_upload import missing_file, receive_at_most_one
from search_service.domain import SearchQuery, Source

_SOURCES: dict[str, Source | None] = {"images": "image", "videos": "video", "all": None}

router = APIRouter(tags=["search"])

# The body is parsed by hand (a clip streams to a staging file, see video_upload), so OpenAPI is
# told its shape here. Exactly one of `image`, `video` and `face_id`: the route checks it (422
# otherwise); with `face_id` in the query string no body is needed.
_SEARCH_BODY = {
    "requestBody": {
        "required": False,
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
                        "face_id": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_ID,
                            "description": "Search with this stored face instead (or as a query parameter).",
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
    summary="Find stored faces like each face in a photo, each person in a video clip, or a stored face",
    openapi_extra=_SEARCH_BODY,
    responses=error_responses(400, 404, 409, 413, 415, 422, 502, 503),
)
async def search(
    services: ServicesDep,
    access: AccessDep,
    request: Request,
    query_params: Annotated[SearchParams, Query()],
) -> SearchResponse:
    """Send a photo as `image`, or a short clip as `video`. Every face found in the photo, or
    every person found in the clip (as video ingest finds them; with the clip's `time_ranges`
    where they appear, `best_time` and a `thumbnail_url` of their clearest face), gets its own
    list of up to `k` hits, best first, each with its cosine similarity (`score`) and whether it
    is a `match`. Once the store holds enough distinct faces, hits are ranked and matched by their
    AS-norm `normalized_score` (`score_kind: "as_norm"`; `threshold` in its units, by default the
    one calibrated for the embedding model); a request's `threshold` is a cosine similarity and
    ranks and matches by cosine.
    `collection` and `source` (images, videos, all) filter exactly; they may also come as form
    fields, which win. Nothing of the query is stored.

    Or name a stored face as `face_id` (a face of `GET /images/{id}`, a hit's `face_id`, a video
    person's `face_id`): it is searched as a photo's face, without the embedder (unless the match
    threshold must come from its model: then, while it is unreachable, cosine with
    `SEARCH_MATCH_THRESHOLD` when set, else a 503), and the answer's
    `query` says where the face is; the face itself (for a video, its whole person) is no hit. An
    unknown `face_id`, or one of a collection the API key may not read, is a 404.

    A photo or clip without a face is a 422, as is sending not exactly one of `image`, `video` and
    `face_id`.
    A clip longer than `SEARCH_VIDEO_MAX_QUERY_SECONDS` (judged from its container before it is
    decoded) or larger than `SEARCH_VIDEO_MAX_QUERY_BYTES` is a 413; one that is no decodable
    video (corrupt, audio only, a still image) a 415. A clip is analysed while the request waits:
    a few seconds per minute of 720p video."""
    settings = services.settings
    file_fields = {"image": settings.uploads.max_image_bytes, "video": settings.video.max_query_bytes}
    if query_params.face_id is not None and "content-type" not in request.headers:
        field, staged, form = None, None, SearchParams()  # no body: everything is in the query
    else:
        field, staged, form = await receive_at_most_one(
            request, file_fields=file_fields, form_model=SearchParams, staging=services.videos.staging_file
        )
    try:
        params = SearchParams.model_validate(
            query_params.model_dump(exclude_unset=True) | form.model_dump(exclude_unset=True)
        )
        query = SearchQuery(
            k=params.k,
            threshold=params.threshold,
            collection=access.filter_collection(params.collection),
            source=_SOURCES[params.source],
        )
        if staged is None:
            if params.face_id is None:
                raise missing_file(file_fields)
            result = await services.search.search_face(params.face_id, query, access.collections)
        elif params.face_id is not None:
            raise invalid_parameter(
                ("body", "face_id"), f"send either `{field}` or `face_id`, not both", params.face_id
            )
        elif field == "video":
            result = await services.search.search_clip(staged.path, staged.filename, query)
        else:
            result = await services.search.search(await read_staged(staged), query)
    finally:
        # Not awaited: a cancelled request (the client went away) must still remove it.
        if staged is not None:
            staged.path.unlink(missing_ok=True)
    return presenters.search_response(result)
