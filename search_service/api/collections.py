"""Collections: named groups of photos and videos, searched separately or together."""

from __future__ import annotations

from fastapi import APIRouter

from search_service.api import presenters
from search_service.api.access import AccessDep
from search_service.api.deps import ServicesDep
from search_service.api.schemas import CollectionList

router = APIRouter(tags=["collections"])


@router.get("/collections", response_model=CollectionList, summary="Collections with their counts")
async def list_collections(services: ServicesDep, access: AccessDep) -> CollectionList:
    stats = [entry for entry in await services.collections() if access.sees(entry.name)]
    return presenters.collections(stats)
