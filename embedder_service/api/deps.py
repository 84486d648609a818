"""Request-scoped access to the process-wide embedder service."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from embedder_service.service import EmbedderService


def get_service(request: Request) -> EmbedderService:
    service: EmbedderService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="models are not loaded yet")
    return service


ServiceDep = Annotated[EmbedderService, Depends(get_service)]
