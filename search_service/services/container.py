"""Everything a running search service holds open, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from search_service.clients.embedder import EmbedderClient
from search_service.domain import CollectionStats, DiskSpace, HealthReport
from search_service.index.base import FaceIndex
from search_service.index.registry import create_index
from search_service.services.cohort import ScoreCohort
from search_service.services.faces import FaceDetector
from search_service.services.frames import FrameEmbedder
from search_service.services.images import ImagesService
from search_service.services.search import SearchService
from search_service.services.videos import VideosService
from search_service.settings import SearchSettings
from search_service.storage import Storage


@dataclass(frozen=True)
class Services:
    settings: SearchSettings
    storage: Storage
    index: FaceIndex
    embedder: EmbedderClient
    images: ImagesService
    search: SearchService
    videos: VideosService
    cohort: ScoreCohort
    cohort_filler: asyncio.Task[None]  # ScoreCohort.keep_filled, cancelled by close()

    @classmethod
    async def open(cls, settings: SearchSettings) -> Services:
        storage = await asyncio.to_thread(
            Storage.open, settings.data_dir, reserve_bytes=settings.disk.reserve_bytes
        )
        index = create_index(settings)
        await asyncio.to_thread(index.open, storage.faces)
        embedder = EmbedderClient(settings.embedder)
        embedder.start()  # its health probe; stopped by aclose() in close()
        detector = FaceDetector(embedder, storage.embedding_model)
        frames = FrameEmbedder(detector, asyncio.get_running_loop(), settings.video)
        videos = VideosService(storage.videos, storage.jobs, index, frames, settings.video)
        await asyncio.to_thread(videos.runner.start)
        cohort = ScoreCohort(storage.cohort, enabled=settings.scoring.score_normalization)
        return cls(
            settings=settings,
            storage=storage,
            index=index,
            embedder=embedder,
            images=ImagesService(storage.images, index, detector),
            search=SearchService(
                storage.faces,
                index,
                detector,
                settings.match_threshold,
                frames,
                settings.video,
                cohort,
                settings.scoring,
            ),
            videos=videos,
            cohort=cohort,
            cohort_filler=asyncio.create_task(
                cohort.keep_filled(settings.scoring.cohort_check_interval_s), name="score cohort filler"
            ),
        )

    async def collections(self) -> list[CollectionStats]:
        return await asyncio.to_thread(self.storage.faces.collections)

    def disk_space(self) -> DiskSpace:
        """Free space on the data directory's disk, against SEARCH_MIN_FREE_BYTES (a statvfs: fast)."""
        return DiskSpace(
            free_bytes=self.storage.free_bytes(),
            min_free_bytes=self.settings.disk.min_free_bytes,
            reserve_bytes=self.storage.reserve_held(),
        )

    async def health(self) -> HealthReport:
        index = await asyncio.to_thread(self.index.health)
        embedder = await self.embedder.status()
        cohort = await asyncio.to_thread(self.cohort.status)
        return HealthReport(
            index_backend=index.backend,
            index_ok=index.ok,
            faces=index.faces,
            index_details=index.details,
            embedder_model=embedder.model,
            thresholds=embedder.thresholds,
            embedder_problem=embedder.problem,
            disk=self.disk_space(),
            cohort=cohort,
        )

    async def close(self) -> None:
        # Workers first: a running job or clip query may be waiting for the embedder client here.
        await asyncio.to_thread(self.cohort.stop)  # a draw in progress reads the store
        self.cohort_filler.cancel()
        await asyncio.wait({self.cohort_filler})
        self.search.close()
        await asyncio.to_thread(self.videos.runner.stop)
        await self.embedder.aclose()
        await asyncio.to_thread(self.index.close)
        self.storage.close()
