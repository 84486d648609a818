"""Embedder endpoints: thin wrappers over :class:`EmbedderService`."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from embedder_service.api.deps import ServiceDep
from embedder_service.batching import Cancellation
from embedder_service.imaging import ImageError
from embedder_service.limits import Deadline, DeadlineExceeded
from embedder_service.schemas import FacesResponse, Health, ModelsResponse
from embedder_service.telemetry import REQUESTS_REJECTED
from facesearch_common.access_http import ACCESS_RESPONSES

router = APIRouter()

CLIENT_CLOSED_REQUEST = 499
T = TypeVar("T")

RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Empty, corrupt or truncated image"},
    413: {"description": "Upload, image dimensions or the request's total pixels over the configured limits"},
    415: {"description": "Not an image, or an unsupported format"},
    422: {"description": "Invalid parameters"},
    503: {
        "description": (
            "Models not loaded; or, with Retry-After, too many requests already queued"
            " (EMBEDDER_MAX_QUEUED_REQUESTS) or the request's deadline passed (EMBEDDER_REQUEST_DEADLINE_S)"
        ),
        "headers": {"Retry-After": RETRY_AFTER},
    },
}


def _default(setting: str) -> str:
    return f"default: the service's settings ({setting})"


@router.post("/faces", response_model=FacesResponse, responses={**ACCESS_RESPONSES, **ERRORS}, tags=["faces"])
async def faces(
    request: Request,
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
    # Given at the request's arrival by AdmissionMiddleware, installed for /faces.
    deadline: Deadline = request.state.deadline
    try:
        return await _unless_abandoned(
            request, partial(service.faces, uploads, options, embeddings, landmarks, deadline)
        )
    except CancelledError:
        # Mostly read by nobody: the status shows in the access log, as nginx's 499 does.
        raise HTTPException(
            CLIENT_CLOSED_REQUEST,
            "the request was cancelled: its client went away, or the service is stopping",
        ) from None
    except ImageError as error:
        raise HTTPException(error.status_code, str(error)) from None
    except DeadlineExceeded as error:
        REQUESTS_REJECTED.labels("deadline").inc()
        raise HTTPException(503, str(error), headers={"Retry-After": str(settings.retry_after_s)}) from None


async def _unless_abandoned(request: Request, work: Callable[[Cancellation], T]) -> T:
    """``work(cancellation)`` in a worker thread; ``cancellation`` is cancelled if the client
    goes away first, so that the request's model runs still queued are dropped."""
    cancellation = Cancellation()
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_when_abandoned, request, cancellation)
        try:
            return await run_in_threadpool(work, cancellation)
        except Exception as error:
            # Raised outside the group, which would wrap it in an ExceptionGroup.
            failure = error
        finally:
            group.cancel_scope.cancel()
    raise failure


async def _cancel_when_abandoned(request: Request, cancellation: Cancellation) -> None:
    """Cancels the request's queued model runs once its client goes away, or once the handler is
    cancelled; a no-op when it ends after the answer, with nothing left queued.

    The body has been read by then: the server's next message is the disconnect.
    """
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    finally:
        cancellation.cancel()


# Both answer on the event loop, not in a worker thread: the search service's health probe (its
# circuit breaker) must get through while every worker thread waits on a model run.
@router.get("/models", response_model=ModelsResponse, responses=ACCESS_RESPONSES, tags=["models"])
async def models(service: ServiceDep) -> ModelsResponse:
    """The models in use: name, dimension, match threshold, version, checksum, source, providers."""
    return service.models()


@router.get("/healthz", response_model=Health, tags=["ops"])
async def healthz(request: Request) -> Health:
    """Liveness and whether the models are loaded."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        return Health(status="starting", models_loaded=False, providers=[])
    return Health(status="ok", models_loaded=True, providers=service.providers())
