"""Photos: ingest (one or many per request), list and look up, download, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.errors import error_responses, invalid_parameter
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
    responses=error_responses(400, 409, 413, 415, 422, 502, 503),
)
async def ingest_images(
    services: ServicesDep,
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
    """Answers once every photo is durably stored and searchable. A photo already stored in the
    collection (same bytes) is not stored again: its existing record comes back with
    `duplicate: true`. If the embedder rejects any photo, nothing of the request is stored."""
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
        collection=collection or services.settings.default_collection,
        external_ids=external_id or [None] * len(uploads),
        metadata=metadata or {},
    )
    return IngestResponse(images=[presenters.ingested_image(entry) for entry in stored])


@router.get("", response_model=ImageList, summary="List or look up photos")
async def list_images(
    services: ServicesDep,
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
        sha256=sha256, collection=collection, external_id=external_id, after=after, limit=limit
    )
    return ImageList(
        images=[presenters.image(record) for record in records],
        next_after=records[-1].id if len(records) == limit else None,
    )


@router.get(
    "/{image_id}", response_model=Image, summary="A photo's record and faces", responses=error_responses(404)
)
async def get_image(services: ServicesDep, image_id: IdPath) -> Image:
    return presenters.image(await services.images.get(image_id))


@router.get(
    "/{image_id}/file",
    response_class=FileResponse,
    summary="The stored photo, byte for byte",
    responses={200: {"content": {"image/*": {}}, "description": "The photo."}, **error_responses(404)},
)
async def get_image_file(services: ServicesDep, image_id: IdPath) -> FileResponse:
    path, content_type = await services.images.file(image_id)
    return FileResponse(path, media_type=content_type)


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
