"""Bounded work per request (issue 10, row 1): a pixel budget, detection on a downscaled copy,
admission control and a deadline, through the HTTP API of the unit-tier app (stand-in detector).

The stand-in detector reports its faces at fixed places in whatever image reaches it, so the
boxes of the answer show the size of the image detection ran on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Scope

from embedder_service.models.detector import Detection
from embedder_service.service import EmbedderService
from tests.embedder.api.conftest import FACES, GAP, AppFactory, FakeDetector, photo
from tests.embedder.api.test_abuse import png_declaring, post
from tests.embedder.conftest import BOMB_SIDE


def service_of(client: TestClient) -> EmbedderService:
    service: EmbedderService = client.app.state.service  # type: ignore[attr-defined]
    return service


def metric(client: TestClient, name: str) -> float:
    """One sample of the app's /metrics, 0 when it has not been recorded yet."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_the_6300_px_png_is_detected_on_a_downscaled_copy(make_client: AppFactory, png_bomb: bytes) -> None:
    assert len(png_bomb) < 5_000
    client = make_client(detect_max_side=2048)
    response = post(client, "bomb.png", png_bomb)
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert (image["width"], image["height"]) == (BOMB_SIDE, BOMB_SIDE)
    # The stand-in saw a 2048 px copy: its first face (16 px at GAP, GAP) comes back 6300/2048 larger.
    factor = BOMB_SIDE / 2048
    smallest = min(image["faces"], key=lambda face: face["box"][2] - face["box"][0])
    expected = [(GAP + 0.5) * factor - 0.5] * 2 + [(GAP + FACES[0][0] + 0.5) * factor - 0.5] * 2
    assert smallest["box"] == pytest.approx(expected, abs=0.01)


def test_a_photo_within_the_side_is_detected_as_it_is(make_client: AppFactory) -> None:
    client = make_client(detect_max_side=2048)
    response = client.post("/faces", params={"min_face_size": 16}, files=[("image", ("p.jpg", photo()))])
    smallest = min(response.json()["images"][0]["faces"], key=lambda face: face["box"][2] - face["box"][0])
    assert smallest["box"] == [GAP, GAP, GAP + FACES[0][0], GAP + FACES[0][0]]


@pytest.mark.parametrize(("min_face_size", "sides"), [(30, [32, 80, 80]), (40, [80, 80])])
def test_min_face_size_stays_in_photo_pixels_on_a_copy(
    make_client: AppFactory, min_face_size: int, sides: list[int]
) -> None:
    """A photo twice the copy's side: the stand-in's 16 and 40 px faces are 32 and 80 photo pixels."""
    client = make_client(detect_max_side=300)
    response = client.post(
        "/faces", params={"min_face_size": min_face_size}, files=[("image", ("p.jpg", photo(600, 200)))]
    )
    found = response.json()["images"][0]["faces"]
    assert sorted(round(face["box"][2] - face["box"][0]) for face in found) == sides


def test_a_request_over_the_pixel_budget_is_413_before_decoding(make_client: AppFactory) -> None:
    # Two headers of 800 x 800 with no real pixel data behind them: decoding either would be a 400.
    images = [("image", (f"{i}.png", png_declaring(800, 800))) for i in range(2)]
    tight = make_client(max_image_pixels=1_000_000, max_request_pixels=1_000_000)
    response = tight.post("/faces", files=images)
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the 2 images of this request declare 1280000 pixels in all;"
        " the limit per request is 1000000"
    }
    roomy = make_client(max_image_pixels=1_000_000, max_request_pixels=2_000_000)
    assert roomy.post("/faces", files=images).status_code == 400


def test_requests_beyond_the_queue_are_503_at_once(make_client: AppFactory) -> None:
    limit = 4
    client = make_client(max_queued_requests=limit, retry_after_s=2)
    rejected_before = metric(client, 'embedder_requests_rejected_total{reason="queue_full"}')
    with ThreadPoolExecutor(limit) as pool:
        with service_of(client).light_lane.turn():
            queued = [pool.submit(post, client, f"{i}.jpg", photo(seed=i)) for i in range(limit)]
            wait_for(lambda: metric(client, "embedder_requests_admitted") == limit)
            started = time.monotonic()
            response = post(client, "one-too-many.jpg", photo())
            assert time.monotonic() - started < 1.0
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.json() == {
                "detail": f"the embedder is busy: {limit} requests are already queued or running"
            }
        assert [future.result().status_code for future in queued] == [200] * limit
    assert metric(client, 'embedder_requests_rejected_total{reason="queue_full"}') == rejected_before + 1
    assert metric(client, "embedder_requests_admitted") == 0
    assert post(client, "after.jpg", photo()).status_code == 200


def test_a_request_past_its_deadline_is_503_not_500(make_client: AppFactory) -> None:
    client = make_client(request_deadline_s=0.2, retry_after_s=3)
    with service_of(client).light_lane.turn():
        response = post(client, "late.jpg", photo())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json() == {
        "detail": "the request did not finish within its 0.2 s deadline (before detecting faces in image 0)"
    }
    assert post(client, "in-time.jpg", photo()).status_code == 200


DETECTION_S = 0.1


class SlowDetector(FakeDetector):
    """The stand-in, taking :data:`DETECTION_S` per image as MTCNN takes its time on a large photo."""

    def detect(self, image: np.ndarray, *args: Any, **kwargs: Any) -> list[Detection]:
        time.sleep(DETECTION_S)
        return super().detect(image, *args, **kwargs)


def test_a_single_photo_is_not_queued_behind_a_whole_large_request(make_client: AppFactory) -> None:
    """A lane is taken per batched run, and requests take turns in a batch: a photo arriving during
    a 20-image request (2 s of detection, in runs of 2 images) is answered after one or two runs,
    while the large request still runs."""
    client = make_client(detector=SlowDetector(), batch_max_images=2)
    large_files = [("image", (f"{i}.jpg", photo(seed=i))) for i in range(20)]
    turns = metric(client, 'embedder_model_queue_seconds_count{lane="light"}')  # the lock's grants so far
    with ThreadPoolExecutor(1) as pool:
        large = pool.submit(client.post, "/faces", files=large_files)
        wait_for(
            lambda: metric(client, 'embedder_model_queue_seconds_count{lane="light"}') > turns
        )  # detecting
        started = time.monotonic()
        single = post(client, "single.jpg", photo())
        waited = time.monotonic() - started
        running = not large.done()
        assert large.result().status_code == 200
    assert single.status_code == 200
    assert running, f"the large request was over before the single photo was answered ({waited:.2f} s)"
    assert waited < 10 * DETECTION_S


def test_a_small_photo_does_not_wait_behind_a_large_photos_run(make_client: AppFactory) -> None:
    """Detecting a 1000 x 800 photo from 20 px faces runs P-Net on 600 x 480 pixels: the heavy lane;
    the 188 x 64 photo's 113 x 39: the light one."""
    client = make_client(request_deadline_s=0.5, light_run_pixels=100_000)
    with service_of(client).heavy_lane.turn():  # as while a large photo's detection runs
        small = post(client, "small.jpg", photo())
        large = post(client, "large.jpg", photo(width=1000, height=800))
    assert small.status_code == 200
    assert large.status_code == 503
    assert large.json()["detail"].endswith("(before detecting faces in image 0)")
    assert post(client, "large.jpg", photo(width=1000, height=800)).status_code == 200


class CountingDetector(FakeDetector):
    """The stand-in, counting the images it detects in."""

    def __init__(self) -> None:
        self.images = 0

    def detect(self, image: np.ndarray, *args: Any, **kwargs: Any) -> list[Detection]:
        self.images += 1
        return super().detect(image, *args, **kwargs)


def test_a_request_whose_client_goes_away_leaves_nothing_to_run(make_client: AppFactory) -> None:
    """The client disconnects while its photo waits for the lane: the photo is never detected."""
    detector = CountingDetector()
    client = make_client(detector=detector)
    detected = detector.images  # the warm-up's
    request = httpx.Request("POST", "http://testserver/faces", files=[("image", ("gone.jpg", photo()))])
    body = request.read()
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/faces",
        "raw_path": b"/faces",
        "query_string": b"",
        "root_path": "",
        "headers": [(name.encode(), value.encode()) for name, value in request.headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    statuses: list[int] = []

    async def abandon() -> None:
        gone = anyio.Event()
        messages: Iterator[Message] = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> Message:
            if (message := next(messages, None)) is not None:
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def serve() -> None:
            await client.app(scope, receive, send)

        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            await anyio.sleep(0.5)  # the photo is decoded and waits for the lane
            gone.set()

    with service_of(client).light_lane.turn():
        anyio.run(abandon)
    assert statuses == [499]
    assert post(client, "after.jpg", photo()).status_code == 200  # queued after the abandoned photo
    assert detector.images == detected + 1


class GpuDetector(FakeDetector):
    """The stand-in, reporting the CUDA provider as a detector on a GPU does."""

    @property
    def providers_in_use(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(("detector", "waits"), [(FakeDetector(), False), (GpuDetector(), True)])
def test_a_lone_photo_waits_for_batch_mates_on_the_gpu_only(
    make_client: AppFactory, detector: FakeDetector, waits: bool
) -> None:
    """On the CPU a batched run costs what its photos cost one by one: waiting would only add latency."""
    wait_s = 1.0
    client = make_client(detector=detector, batch_wait_ms=wait_s * 1000)
    started = time.monotonic()
    assert post(client, "lone.jpg", photo()).status_code == 200
    assert (time.monotonic() - started >= wait_s) is waits
