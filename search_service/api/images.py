"""Photos: ingest (one or many per request), list and look up, download, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile

from search_service.api import presenters
from search_service.api.access import AccessDep
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses, invalid_parameter
from search_service.api.ranged_file import RANGE_SUPPORT, RangedFileResponse, ranged_file_responses
from search_service.api.schemas import (
    COLLECTION_PATTERN,
    MAX_EXTERNAL_ID_CHARS,
    MAX_ID,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    ExternalId,
    IdPath,
    Image,
    ImageList,
    IngestResponse,
    Metadata,
)
from search_service.api.uploads import read_upload

router = APIRouter(prefix="/images", tags=["images"])


@router.post(
    "",
    response_model=IngestResponse,
    summary="Store photos and index their faces",
    responses=error_responses(400, 409, 413, 415, 422, 502, 503, 507),
)
async def ingest_images(
    services: ServicesDep,
    access: AccessDep,
    image: Annotated[list[UploadFile], File(description="A photo; repeat the field to send several.")],
    collection: Annotated[
        str | None,
        Form(pattern=COLLECTION_PATTERN, description="Defaults to the service's default collection."),
    ] = None,
    external_id: Annotated[
        list[ExternalId] | None,
        Form(
            description="Your id for each photo: give it once per photo, in upload order "
            f"(at most {MAX_EXTERNAL_ID_CHARS} characters, no control characters)."
        ),
    ] = None,
    metadata: Annotated[
        Metadata | None,
        Form(
            description="A JSON object stored with every photo of the request (strict JSON: no NaN or "
            f"Infinity; at most {MAX_METADATA_BYTES} bytes, nested at most {MAX_METADATA_DEPTH} deep)."
        ),
    ] = None,
) -> IngestResponse:
    """Answers once every photo is durably stored and searchable, one entry per photo in upload
    order. A photo already stored in the collection (same bytes) is not stored again: its existing
    record comes back with `duplicate: true`.

    A photo the embedder refuses (corrupt, truncated, not an image, too large) fails only itself:
    the others are stored, the answer is a 200, and the refused photo's entry is
    `{"id": null, "faces": [], "duplicate": false, "error": {"status": 400, "detail": "name.jpg: ..."}}`,
    `status` being what that photo alone would have been answered with (400, 413, 415 or 422).
    When every photo of the request is refused, nothing is stored and the answer is the first
    refusal's status and detail. Any other failure (the embedder unavailable: 503; another model:
    409) fails the whole request, and nothing of it is stored."""
    limits = services.settings.uploads
    if len(image) > limits.max_images_per_request:
        raise invalid_parameter(
            ("body", "image"), f"at most {limits.max_images_per_request} photos per request", len(image)
        )
    if external_id is not None and len(external_id) != len(image):
        raise invalid_parameter(
            ("body", "external_id"),
            f"give one external_id per photo ({len(external_id)} for {len(image)} photos)",
            external_id,
        )
    uploads = [await read_upload(file, limits.max_image_bytes) for file in image]
    stored = await services.images.ingest(
        uploads,
        collection=access.ingest_collection(collection, services.settings.default_collection),
        external_ids=external_id or [None] * len(uploads),
        metadata=metadata or {},
    )
    return IngestResponse(images=[presenters.ingested_image(entry) for entry in stored])


@router.get("", response_model=ImageList, summary="List or look up photos")
async def list_images(
    services: ServicesDep,
    access: AccessDep,
    sha256: Annotated[
        list[str], Query(max_length=1000, description="Only photos with these digests (repeatable).")
    ] = [],  # noqa: B006 - FastAPI copies parameter defaults
    collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    external_id: Annotated[str | None, Query(max_length=MAX_EXTERNAL_ID_CHARS)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Return photos with ids above this (paging).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ImageList:
    """Filters combine; `sha256` lets a bulk client skip photos it already uploaded."""
    records = await services.images.find(
        sha256=sha256,
        collection=access.filter_collection(collection),
        external_id=external_id,
        after=after,
        limit=limit,
    )
    return presenters.image_list(records, limit)


@router.get(
    "/{image_id}", response_model=Image, summary="A photo's record and faces", responses=error_responses(404)
)
async def get_image(services: ServicesDep, image_id: IdPath) -> Image:
    return presenters.image(await services.images.get(image_id))


@router.get(
    "/{image_id}/file",
    response_class=RangedFileResponse,
    summary="The stored photo, byte for byte",
    responses={**ranged_file_responses("image/*", "The photo."), **error_responses(404)},
    description=RANGE_SUPPORT,
)
async def get_image_file(services: ServicesDep, image_id: IdPath) -> RangedFileResponse:
    path, content_type = await services.images.file(image_id)
    return RangedFileResponse(path, media_type=content_type)


# The bytes under an id never change: a browser may keep a thumbnail a day without asking again.
_THUMBNAIL_CACHING = "private, max-age=86400"


def _entity_tags(if_none_match: str | None) -> set[str]:
    """The tags of an If-None-Match header, compared weakly (RFC 9110 13.1.2: W/ is ignored)."""
    if if_none_match is None:
        return set()
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    summary="The photo scaled down, upright, as JPEG",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The thumbnail, with an `ETag`."},
        304: {"description": "`If-None-Match` named this thumbnail's `ETag`: the client's copy is current."},
        **error_responses(404, 415),
    },
)
async def get_image_thumbnail(
    services: ServicesDep,
    image_id: IdPath,
    max_side: Annotated[
        int,
        Query(ge=32, le=1024, description="The longer side of the thumbnail, in pixels (never upscaled)."),
    ] = 256,
    if_none_match: Annotated[
        str | None, Header(description="ETags of copies the client holds: a 304 when one is current.")
    ] = None,
) -> Response:
    """Rotated as its EXIF orientation says, as the face detector saw it: the face boxes of
    `GET /images/{id}` (full-size pixels) fit it once scaled by its width over the photo's `width`.
    Cached by the browser for a day (`Cache-Control: private`), then revalidated by its `ETag`."""
    thumbnail = await services.images.thumbnail(image_id, max_side, cached=_entity_tags(if_none_match))
    headers = {"ETag": thumbnail.etag, "Cache-Control": _THUMBNAIL_CACHING}
    if thumbnail.jpeg is None:
        return Response(status_code=304, headers=headers)
    return Response(thumbnail.jpeg, media_type="image/jpeg", headers=headers)


@router.delete(
    "/{image_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a photo; its faces leave search at once",
    responses=error_responses(404),
)
async def delete_image(services: ServicesDep, image_id: IdPath) -> Response:
    await services.images.delete(image_id)
    return Response(status_code=204)
