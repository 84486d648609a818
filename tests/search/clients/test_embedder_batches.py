"""A bulk upload's batches to the embedder: several in flight at once, answers in order, a refused
photo failing only itself, a failed batch failing the request and leaving nothing in flight.
The embedder is an httpx mock transport that names each photo in its answer (as its width)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from search_service.clients.embedder import EmbedderClient
from search_service.domain import DetectedImage, Upload
from search_service.errors import EmbedderProtocolError
from search_service.settings import EmbedderClientSettings


class Embedder:
    """Answers ``POST /faces`` after ``delay_s``, with photo ``pN.jpg`` as an image N pixels wide;
    refuses (415) any batch holding a photo of ``refused``, fails (500) at once any holding one of
    ``broken``; counts the calls running at once."""

    def __init__(
        self,
        delay_s: float = 0.02,
        refused: frozenset[int] = frozenset(),
        broken: frozenset[int] = frozenset(),
    ) -> None:
        self.delay_s = delay_s
        self.refused = refused
        self.broken = broken
        self.running = 0
        self.most_running = 0
        self.calls = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        numbers = [int(n) for n in re.findall(rb'filename="p(\d+)\.jpg"', request.content)]
        if self.broken.intersection(numbers):
            return httpx.Response(500, json={"detail": "out of order"})
        if self.refused.intersection(numbers):
            return httpx.Response(415, json={"detail": "cannot identify image file"})
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        images = [{"width": n, "height": 1, "faces": []} for n in numbers]
        return httpx.Response(
            200, json={"model": "m", "dimension": 128, "match_threshold": 0.5, "images": images}
        )


def uploads(count: int) -> list[Upload]:
    return [Upload(f"p{n}.jpg", b"jpeg", f"{n:064x}", "image/jpeg") for n in range(count)]


def detect_each(
    embedder: Embedder, photos: list[Upload], *, batch_images: int, batches_in_flight: int
) -> list[int | str]:
    """Each photo's answer: its width as the embedder saw it, or the reason it was refused."""

    async def scenario() -> list[int | str]:
        client = EmbedderClient(
            EmbedderClientSettings(retries=0, batch_images=batch_images, batches_in_flight=batches_in_flight),
            transport=httpx.MockTransport(embedder),
        )
        try:
            outcomes = await client.detect_each(photos)
        finally:
            await client.aclose()
        assert embedder.running == 0  # nothing left in flight once it answered
        return [
            image.width if isinstance(image, DetectedImage) else image.reason for image in outcomes.images
        ]

    return asyncio.run(scenario())


@pytest.mark.parametrize("in_flight", [1, 3])
def test_batches_go_concurrently_up_to_the_bound_and_answer_in_order(in_flight: int) -> None:
    embedder = Embedder()
    answers = detect_each(embedder, uploads(40), batch_images=4, batches_in_flight=in_flight)
    assert answers == list(range(40))
    assert embedder.calls == 10
    assert embedder.most_running == in_flight


def test_a_refused_photo_fails_only_itself() -> None:
    embedder = Embedder(refused=frozenset({5, 13}))
    answers = detect_each(embedder, uploads(16), batch_images=4, batches_in_flight=4)
    assert answers == [*range(5), "unsupported", *range(6, 13), "unsupported", 14, 15]


def test_a_failed_batch_fails_the_request_without_waiting_for_the_others() -> None:
    embedder = Embedder(delay_s=5.0, broken=frozenset({9}))
    started = time.monotonic()
    with pytest.raises(EmbedderProtocolError, match="out of order"):
        detect_each(embedder, uploads(16), batch_images=4, batches_in_flight=4)
    assert time.monotonic() - started < 4.0  # the other batches were abandoned, not waited for
    assert embedder.running == 0
