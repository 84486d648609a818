"""Everything a running search service holds open, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from search_service.embedder_client import EmbedderClient
from search_service.index import create_index
from search_service.index.base import FaceIndex
from search_service.services.images import ImagesService
from search_service.services.model_guard import ModelGuard
from search_service.services.search import SearchService
from search_service.services.videos import VideosService
from search_service.settings import SearchSettings
from search_service.store import Store


@dataclass(frozen=True)
class Services:
    settings: SearchSettings
    store: Store
    index: FaceIndex
    embedder: EmbedderClient
    images: ImagesService
    search: SearchService
    videos: VideosService

    @classmethod
    async def open(cls, settings: SearchSettings) -> Services:
        store = await run_in_threadpool(Store.open, settings.data_dir)
        index = create_index(settings)
        await run_in_threadpool(index.open, store)
        embedder = EmbedderClient(settings)
        guard = ModelGuard(store, embedder)
        videos = VideosService(store, index, embedder, guard, settings, asyncio.get_running_loop())
        await run_in_threadpool(videos.jobs.start)
        return cls(
            settings=settings,
            store=store,
            index=index,
            embedder=embedder,
            images=ImagesService(store, index, embedder, guard),
            search=SearchService(store, index, embedder, guard, settings.match_threshold),
            videos=videos,
        )

    async def close(self) -> None:
        # Workers first: a running job may be waiting for the embedder client on this loop.
        await run_in_threadpool(self.videos.jobs.stop)
        await self.embedder.aclose()
        await run_in_threadpool(self.index.close)
        self.store.close()
