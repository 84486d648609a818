"""Collections: named groups of photos and videos, searched separately or together."""

from __future__ import annotations

from fastapi import APIRouter

from search_service.api import presenters
from search_service.api.deps import ServicesDep
from search_service.api.schemas import CollectionList

router = APIRouter(tags=["collections"])


@router.get("/collections", response_model=CollectionList, summary="Collections with their counts")
async def list_collections(services: ServicesDep) -> CollectionList:
    stats = await services.collections()
    return presenters.collections(stats)
