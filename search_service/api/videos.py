"""Videos: upload (analysed in the background), list and look up, face thumbnails, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from search_service.api import presenters
from search_service.api.access import AccessDep
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses
from search_service.api.ranged_file import RANGE_SUPPORT, RangedFileResponse, ranged_file_responses
from search_service.api.schemas import (
    COLLECTION_PATTERN,
    MAX_EXTERNAL_ID_CHARS,
    MAX_ID,
    IdPath,
    Video,
    VideoAccepted,
    VideoForm,
    VideoList,
)
from search_service.api.video_upload import receive_upload

router = APIRouter(prefix="/videos", tags=["videos"])

# The body is parsed by hand (see video_upload), so OpenAPI is told its shape here.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {
                        "video": {"type": "string", "format": "binary", "description": "The video file."},
                        "collection": {
                            "type": "string",
                            "pattern": COLLECTION_PATTERN,
                            "description": "Defaults to the service's default collection.",
                        },
                        "external_id": {"type": "string", "description": "Your id for the video."},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=VideoAccepted,
    summary="Store a video and analyse it in the background",
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(400, 413, 415, 422, 507),
)
async def upload_video(services: ServicesDep, access: AccessDep, request: Request) -> VideoAccepted:
    """Answers as soon as the file is stored: follow `GET /jobs/{job_id}`; the people found are at
    `GET /videos/{video_id}` and in search once the job is done. The file streams to disk and is
    refused with a 413 as soon as it passes the size limit. A file that is no video (its container
    does not open, or its first video frame does not decode) is refused with a 415 naming the file
    and the reason, and nothing is kept; a body that is not well-formed multipart is a 400. While
    the disk is below `SEARCH_MIN_FREE_BYTES` (counting the declared `Content-Length`), or when it
    fills up during the upload, the answer is a 507 and nothing is kept."""
    staged, form = await receive_upload(
        request,
        file_field="video",
        form_model=VideoForm,
        staging=services.videos.staging_file,
        max_bytes=services.settings.uploads.max_video_bytes,
    )
    try:
        submitted = await services.videos.submit(
            staged,
            collection=access.ingest_collection(form.collection, services.settings.default_collection),
            external_id=form.external_id,
        )
    finally:
        # Stored means moved into place; whatever is still here was not stored.
        staged.path.unlink(missing_ok=True)
    return presenters.video_accepted(submitted)


@router.get("", response_model=VideoList, summary="List or look up videos")
async def list_videos(
    services: ServicesDep,
    access: AccessDep,
    collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    external_id: Annotated[str | None, Query(max_length=MAX_EXTERNAL_ID_CHARS)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Return videos with ids above this (paging).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> VideoList:
    records = await services.videos.find(
        collection=access.filter_collection(collection), external_id=external_id, after=after, limit=limit
    )
    return presenters.video_list(records, limit)


@router.get(
    "/{video_id}",
    response_model=Video,
    summary="A video's metadata, state and people with their time ranges",
    responses=error_responses(404),
)
async def get_video(services: ServicesDep, video_id: IdPath) -> Video:
    return presenters.video(await services.videos.get(video_id))


@router.get(
    "/{video_id}/file",
    response_class=RangedFileResponse,
    summary="The stored video, byte for byte; Range requests play and seek it in a browser",
    responses={**ranged_file_responses("video/*", "The whole video."), **error_responses(404)},
    description=RANGE_SUPPORT,
)
async def get_video_file(services: ServicesDep, video_id: IdPath) -> RangedFileResponse:
    path, content_type = await services.videos.file(video_id)
    return RangedFileResponse(path, media_type=content_type)


@router.get(
    "/{video_id}/thumbnails/{track_id}",
    response_class=RangedFileResponse,
    summary="The clearest face of a track, as JPEG",
    responses={**ranged_file_responses("image/jpeg", "The face."), **error_responses(404)},
    description=RANGE_SUPPORT,
)
async def get_thumbnail(services: ServicesDep, video_id: IdPath, track_id: IdPath) -> RangedFileResponse:
    return RangedFileResponse(await services.videos.thumbnail(video_id, track_id), media_type="image/jpeg")


@router.delete(
    "/{video_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a video; its faces leave search at once, a running analysis is cancelled",
    responses=error_responses(404, 507),
)
async def delete_video(services: ServicesDep, video_id: IdPath) -> Response:
    await services.videos.delete(video_id)
    return Response(status_code=204)
