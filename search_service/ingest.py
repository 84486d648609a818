"""Bulk ingest of a folder of photos through the HTTP API.

    python -m search_service.ingest DIR [--url URL] [--collection NAME] [--concurrency N] [--batch N]

Every photo under DIR goes to ``POST /images`` with its path relative to DIR as ``external_id``,
several per request. Resumable: photos already in the collection are found by content digest
(``GET /images?sha256=...``, one call per batch) and skipped, and anything that slips through is
recognised by the server's own dedupe, so re-running after an interruption never duplicates.
Server restarts and an unavailable embedder (connection errors, 503) are ridden out by retrying
with backoff. A photo the server refuses is counted as failed, with its reason, and the rest go on.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import mimetypes
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tenacity
from tqdm import tqdm

from facesearch_common.retry import backoff

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Answers for a whole request that may be one photo's fault: the server's verdict when it refused
# every photo (it names only the first), or a 502 when the embedder failed on one of them.
_ONE_PHOTOS_FAULT = frozenset({400, 413, 415, 422, 502})
# Answers that mean "try later": the server restarting behind a proxy, or its embedder unavailable.
_TRY_LATER = frozenset({429, 503})
# Photos in flight: twice what the embedder detects in one batched run (EMBEDDER_BATCH_MAX_IMAGES,
# 32), so that on a GPU the next run's photos are already there while one runs and while answers
# travel back through the search service (docs/decisions/embedder.md).
DEFAULT_CONCURRENCY = 8
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class Photo:
    path: Path
    external_id: str
    data: bytes
    sha256: str


@dataclass
class Summary:
    found: int = 0
    ingested: int = 0
    skipped: int = 0  # already indexed before this run
    duplicates: int = 0  # identical content under another path, recognised by the server
    faces: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def report(self, elapsed_s: float) -> str:
        rate = self.ingested / elapsed_s if elapsed_s > 0 else 0.0
        lines = [
            f"photos found:      {self.found}",
            f"ingested:          {self.ingested} ({rate:.1f} photos/s over {elapsed_s:.1f} s)",
            f"faces indexed:     {self.faces}",
            f"already indexed:   {self.skipped}",
            f"duplicate content: {self.duplicates}",
            f"failed:            {len(self.failed)}",
        ]
        lines += [f"  {name}: {reason}" for name, reason in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        return "\n".join(lines)


def find_photos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read(root: Path, paths: Sequence[Path]) -> list[Photo]:
    photos = []
    for path in paths:
        data = path.read_bytes()
        photos.append(Photo(path, path.relative_to(root).as_posix(), data, hashlib.sha256(data).hexdigest()))
    return photos


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


class _RequestFailed(Exception):
    pass


class _TryLater(Exception):
    """A 503 or 429 answer: the server or its embedder is not ready yet."""


class Ingester:
    def __init__(
        self, client: httpx.AsyncClient, root: Path, collection: str, retries: int, progress: tqdm
    ) -> None:
        self.client = client
        self.root = root
        self.collection = collection
        self.retries = retries
        self.progress = progress
        self.summary = Summary()

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send, riding out connection errors and 503/429 (a restarting server, an unavailable
        embedder) with backoff; any other answer is returned."""
        policy = backoff(
            f"{method} {url}",
            retries=self.retries,
            backoff_s=0.5,
            retry_on=(httpx.TransportError, _TryLater),
        )
        try:
            async for attempt in tenacity.AsyncRetrying(**policy):
                with attempt:
                    response = await self.client.request(method, url, **kwargs)
                    if response.status_code in _TRY_LATER:
                        raise _TryLater(f"HTTP {response.status_code}: {_detail(response)}")
                    return response
        except (httpx.TransportError, _TryLater) as error:
            problem = f"{type(error).__name__}: {error}"
            raise _RequestFailed(f"gave up after {self.retries + 1} attempts: {problem}") from error
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def run_batch(self, paths: Sequence[Path]) -> None:
        try:
            photos = await asyncio.to_thread(_read, self.root, paths)
            known = await self._known([p.sha256 for p in photos])
            fresh = [p for p in photos if p.sha256 not in known]
            self.summary.skipped += len(photos) - len(fresh)
            if fresh:
                await self._upload(fresh)
        except (_RequestFailed, OSError) as error:
            self.summary.failed += [(p.relative_to(self.root).as_posix(), str(error)) for p in paths]
        self.progress.set_postfix(
            new=self.summary.ingested,
            skipped=self.summary.skipped,
            failed=len(self.summary.failed),
            refresh=False,
        )
        self.progress.update(len(paths))

    async def _known(self, digests: list[str]) -> set[str]:
        response = await self._call(
            "GET",
            "/images",
            params={"sha256": digests, "collection": self.collection, "limit": len(digests)},
        )
        if response.status_code != 200:
            raise _RequestFailed(f"GET /images answered {response.status_code}: {_detail(response)}")
        return {image["sha256"] for image in response.json()["images"]}

    async def _upload(self, photos: list[Photo]) -> None:
        try:
            response = await self._call(
                "POST",
                "/images",
                files=[("image", (p.path.name, p.data, _content_type(p.path))) for p in photos],
                data={"collection": self.collection, "external_id": [p.external_id for p in photos]},
            )
        except _RequestFailed as error:
            self.summary.failed += [(p.external_id, str(error)) for p in photos]
            return
        if response.status_code in _ONE_PHOTOS_FAULT and len(photos) > 1:
            # The answer names one photo's fault only: send them one by one, so that each photo
            # gets in or gets its own reason.
            for photo in photos:
                await self._upload([photo])
            return
        if response.status_code != 200:
            reason = f"HTTP {response.status_code}: {_detail(response)}"
            self.summary.failed += [(p.external_id, reason) for p in photos]
            return
        # One entry per photo, in order; a photo refused beside stored ones carries its own error.
        for photo, image in zip(photos, response.json()["images"], strict=True):
            if (refusal := image.get("error")) is not None:
                reason = f"HTTP {refusal['status']}: {refusal['detail']}"
                self.summary.failed.append((photo.external_id, reason))
            elif image["duplicate"]:
                self.summary.duplicates += 1
            else:
                self.summary.ingested += 1
                self.summary.faces += len(image["faces"])


async def ingest_folder(
    root: Path,
    *,
    url: str,
    collection: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch: int = DEFAULT_BATCH,
    retries: int = 6,
    timeout_s: float = 300.0,
    show_progress: bool = True,
    api_key: str | None = None,
) -> Summary:
    paths = find_photos(root)
    batches: asyncio.Queue[list[Path]] = asyncio.Queue()
    for start in range(0, len(paths), batch):
        batches.put_nowait(paths[start : start + batch])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with tqdm(total=len(paths), unit="photo", disable=not show_progress) as progress:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        async with httpx.AsyncClient(
            base_url=url, timeout=timeout_s, limits=limits, headers=headers
        ) as client:
            ingester = Ingester(client, root, collection, retries, progress)
            ingester.summary.found = len(paths)

            async def worker() -> None:
                while not batches.empty():
                    await ingester.run_batch(batches.get_nowait())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ingester.summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m search_service.ingest", description="Ingest every photo under a folder."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="search service (default %(default)s)")
    parser.add_argument(
        "--collection", default="default", help="collection to ingest into (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight (default %(default)s)",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="photos per request (default %(default)s)"
    )
    parser.add_argument(
        "--retries", type=int, default=6, help="retries on connection errors and 503 (default %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FACESEARCH_API_KEY"),
        help="a write key, when the service requires keys (default: $FACESEARCH_API_KEY)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a directory")
    if args.concurrency < 1 or args.batch < 1:
        parser.error("--concurrency and --batch must be at least 1")
    started = time.perf_counter()
    summary = asyncio.run(
        ingest_folder(
            args.directory,
            url=args.url,
            collection=args.collection,
            concurrency=args.concurrency,
            batch=args.batch,
            retries=args.retries,
            show_progress=not args.quiet,
            api_key=args.api_key,
        )
    )
    print(summary.report(time.perf_counter() - started))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
