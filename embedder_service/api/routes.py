"""Embedder endpoints: thin wrappers over :class:`EmbedderService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from embedder_service.api.deps import ServiceDep
from embedder_service.imaging import ImageError
from embedder_service.schemas import FacesResponse, Health, ModelsResponse

router = APIRouter()

ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "Empty, corrupt or truncated image"},
    413: {"description": "Upload or image dimensions over the configured limits"},
    415: {"description": "Not an image, or an unsupported format"},
    422: {"description": "Invalid parameters"},
    503: {"description": "Models not loaded"},
}


def _default(setting: str) -> str:
    return f"default: the service's settings ({setting})"


@router.post("/faces", response_model=FacesResponse, responses=ERRORS, tags=["faces"])
async def faces(
    service: ServiceDep,
    image: Annotated[list[UploadFile], File(description="one or more images (repeat the field)")],
    min_face_size: Annotated[
        int | None,
        Query(ge=8, le=4096, description=f"smallest face, pixels; {_default('EMBEDDER_MIN_FACE_SIZE')}"),
    ] = None,
    threshold: Annotated[
        float | None,
        Query(
            gt=0,
            lt=1,
            description=f"O-Net face probability cut-off; {_default('EMBEDDER_DETECTION_THRESHOLD')}",
        ),
    ] = None,
    max_faces: Annotated[
        int | None,
        Query(ge=1, le=1000, description=f"keep the N most probable; {_default('EMBEDDER_MAX_FACES')}"),
    ] = None,
    embeddings: Annotated[bool, Query(description="return embeddings")] = True,
    landmarks: Annotated[bool, Query(description="return the 5 landmarks")] = True,
) -> FacesResponse:
    """Detects every face in each uploaded image and returns boxes, landmarks and embeddings.

    The answer names the embedding model, its dimension and its calibrated match threshold.
    """
    settings = service.settings
    if len(image) > settings.max_images_per_request:
        raise HTTPException(
            413, f"{len(image)} images in one request; the limit is {settings.max_images_per_request}"
        )
    uploads: list[tuple[str, bytes]] = []
    for index, upload in enumerate(image):
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(
                413, f"image {index} ({upload.filename}) is over the {settings.max_upload_bytes}-byte limit"
            )
        uploads.append((upload.filename or "upload", data))
    options = service.detection_options(min_face_size, threshold, max_faces)
    try:
        return await run_in_threadpool(service.faces, uploads, options, embeddings, landmarks)
    except ImageError as error:
        raise HTTPException(error.status_code, str(error)) from None


@router.get("/models", response_model=ModelsResponse, tags=["models"])
def models(service: ServiceDep) -> ModelsResponse:
    """The models in use: name, dimension, match threshold, version, checksum, source, providers."""
    return service.models()


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz(request: Request) -> Health:
    """Liveness and whether the models are loaded."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        return Health(status="starting", models_loaded=False, providers=[])
    return Health(status="ok", models_loaded=True, providers=service.providers())
