"""The micro-batcher: coalescing, the bounded wait, cost budgets, turns between requests, errors kept
to their own item, cancellation and deadlines; and the service, whose concurrent requests share
batched runs and get the answers they get alone."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from embedder_service.batching import Cancellation, MicroBatcher
from embedder_service.limits import Deadline, DeadlineExceeded, ModelLock
from embedder_service.service import EmbedderService
from embedder_service.settings import EmbedderSettings

GENEROUS_S = 5.0  # CI machines are slow and shared: bounds that only a hang would break
_names = itertools.count()


class Recorder:
    """A batched function that doubles numbers and records each batch it ran; fails on "bad"."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.threads: list[str] = []  # the thread of each batch's run
        self._lock = threading.Lock()

    def __call__(self, items: list[object]) -> list[int]:
        with self._lock:
            self.batches.append(list(items))
            self.threads.append(threading.current_thread().name)
        if "bad" in items:
            raise ValueError("bad item")
        return [2 * int(item) for item in items]  # type: ignore[call-overload]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_batcher(recorder: Recorder) -> Iterator[Callable[..., MicroBatcher[object, int]]]:
    made: list[MicroBatcher[object, int]] = []

    def make(**options: object) -> MicroBatcher[object, int]:
        settings: dict[str, object] = {"wait_s": 0.05, "max_items": 8, **options}
        batcher = MicroBatcher[object, int](f"test_{next(_names)}", recorder, **settings)  # type: ignore[arg-type]
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


def batch_metric(batcher: MicroBatcher[object, int], sample: str) -> float:
    return REGISTRY.get_sample_value(f"embedder_batch_items_{sample}", {"batcher": batcher.name}) or 0.0


def test_concurrent_submits_within_the_wait_share_one_run(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    batcher = make_batcher(wait_s=GENEROUS_S, max_items=6)
    arrived = threading.Barrier(6)

    def submit(item: int) -> int:
        arrived.wait()
        return batcher.submit(item).result(GENEROUS_S)

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(submit, range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert [sorted(batch) for batch in recorder.batches] == [[0, 1, 2, 3, 4, 5]]  # type: ignore[type-var]
    assert time.monotonic() - started < GENEROUS_S, "a full batch runs at once, without waiting"
    assert (batch_metric(batcher, "count"), batch_metric(batcher, "sum")) == (1, 6)


def test_a_lone_item_runs_after_the_wait_not_later(
    make_batcher: Callable[..., MicroBatcher[object, int]],
) -> None:
    wait_s = 0.2
    batcher = make_batcher(wait_s=wait_s)
    started = time.monotonic()
    assert batcher.submit(21).result(GENEROUS_S) == 42
    elapsed = time.monotonic() - started
    assert wait_s * 0.9 <= elapsed < wait_s + 1.0


class Lane(ModelLock):
    """A lane that tells when a batch's run waits for it."""

    def __init__(self) -> None:
        super().__init__("test")
        self.reached = threading.Event()

    @contextmanager
    def turn(self) -> Iterator[None]:
        self.reached.set()
        with super().turn():
            yield

    @contextmanager
    def busy(self, batcher: MicroBatcher[object, int]) -> Iterator[Future[int]]:
        """Holds the lane while a first item (0) waits for it: what is submitted meanwhile queues."""
        with super().turn():
            first = batcher.submit(0)
            assert self.reached.wait(GENEROUS_S)
            yield first


def test_with_no_wait_a_lone_item_runs_at_once_in_its_own_thread(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    batcher = make_batcher(wait_s=0.0, lane=ModelLock("test"))
    future = batcher.submit(21)
    assert future.done() and future.result() == 42
    assert recorder.threads == [threading.current_thread().name]


def test_with_no_wait_items_queued_during_a_run_share_the_next(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    lane = Lane()
    batcher = make_batcher(wait_s=0.0, lane=lane)
    with lane.busy(batcher):
        futures = [batcher.submit(item) for item in (1, 2, 3)]
    assert [future.result(GENEROUS_S) for future in futures] == [2, 4, 6]
    assert recorder.batches == [[0], [1, 2, 3]]


def test_items_beyond_the_cost_budget_go_to_the_next_run(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    """Each item costs its value: a budget of 10 takes 4 + 5, not 4 + 5 + 3; an item over the
    budget on its own still runs, alone."""
    lane = Lane()
    batcher = make_batcher(max_cost=10, cost=int, lane=lane)
    with lane.busy(batcher):
        futures = [batcher.submit(item) for item in (4, 5, 3, 20)]
    assert [future.result(GENEROUS_S) for future in futures] == [8, 10, 6, 40]
    assert recorder.batches == [[0], [4, 5], [3], [20]]


def test_requests_take_turns_within_batches(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    """A photo submitted after a 5-image request is not run after all five."""
    lane = Lane()
    batcher = make_batcher(max_items=2, lane=lane)
    large, single = object(), object()
    with lane.busy(batcher):
        futures = [batcher.submit(item, group=large) for item in range(1, 6)]
        futures.append(batcher.submit(100, group=single))
    assert [future.result(GENEROUS_S) for future in futures] == [2, 4, 6, 8, 10, 200]
    assert recorder.batches == [[0], [1, 100], [2, 3], [4, 5]]


def test_one_bad_item_fails_alone(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    lane = Lane()
    batcher = make_batcher(lane=lane)
    with lane.busy(batcher):
        good, bad, other = (batcher.submit(item) for item in (1, "bad", 3))
    assert good.result(GENEROUS_S) == 2
    assert other.result(GENEROUS_S) == 6
    with pytest.raises(ValueError, match="bad item"):
        bad.result(GENEROUS_S)
    assert recorder.batches == [[0], [1, "bad", 3], [1], ["bad"], [3]]  # the batch, then each alone


def test_cancelled_items_never_run(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    lane = Lane()
    batcher = make_batcher(lane=lane)
    with lane.busy(batcher) as first:
        queued = batcher.submit(2)
        later = batcher.submit(3)
        assert first.cancel() and queued.cancel()  # one waiting for the lane, one still queued
    assert later.result(GENEROUS_S) == 6
    assert first.cancelled() and queued.cancelled()
    assert recorder.batches == [[3]]


def test_a_cancellation_drops_every_future_it_tracks() -> None:
    cancellation = Cancellation()
    tracked: list[Future[int]] = [cancellation.track(Future()) for _ in range(3)]
    done = cancellation.track(Future[int]())
    done.set_result(1)
    cancellation.cancel()
    assert all(future.cancelled() for future in tracked)
    assert done.result() == 1
    assert cancellation.track(Future()).cancelled(), "work submitted after the cancel is dropped at once"


def test_an_item_past_its_deadline_gets_deadline_exceeded_and_does_not_run(
    make_batcher: Callable[..., MicroBatcher[object, int]], recorder: Recorder
) -> None:
    lane = Lane()
    batcher = make_batcher(lane=lane)
    with lane.busy(batcher):
        late = batcher.submit(1, Deadline.after(0.05), "before detecting faces in image 3")
        in_time = batcher.submit(2, Deadline.after(GENEROUS_S))
        time.sleep(0.2)
    with pytest.raises(DeadlineExceeded, match=r"0\.05 s deadline \(before detecting faces in image 3\)"):
        late.result(GENEROUS_S)
    assert in_time.result(GENEROUS_S) == 4
    assert recorder.batches == [[0], [2]]


def test_closing_cancels_what_is_queued(make_batcher: Callable[..., MicroBatcher[object, int]]) -> None:
    lane = Lane()
    batcher = make_batcher(lane=lane)
    with lane.busy(batcher) as running:
        queued = batcher.submit(2)
        closing = threading.Thread(target=batcher.close)
        closing.start()
        deadline = time.monotonic() + GENEROUS_S
        while not queued.cancelled():
            assert time.monotonic() < deadline, "close did not cancel the queued item"
            time.sleep(0.01)
    closing.join(GENEROUS_S)
    assert running.result(GENEROUS_S) == 0, "the batch already waiting for the lane still runs"
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(3)


# The service end to end, with the real models.


def lfw_and_group_photos(shared_data: Path) -> list[tuple[str, bytes]]:
    paths = sorted((shared_data / "lfw_dev").glob("A*/*_0001.jpg"))[:6]
    paths.append(shared_data / "multi_face" / "azure_identification1.jpg")
    return [(path.name, path.read_bytes()) for path in paths]


@pytest.fixture(scope="module")
def service(models_dir: Path) -> Iterator[EmbedderService]:
    settings = EmbedderSettings(models_dir=models_dir, log_json=False, providers=["CPUExecutionProvider"])
    built = EmbedderService.from_models(settings)
    yield built
    built.close()


def detect_batches(sample: str) -> float:
    return REGISTRY.get_sample_value(f"embedder_batch_items_{sample}", {"batcher": "detect_light"}) or 0.0


def test_concurrent_requests_get_the_answers_they_get_alone(
    service: EmbedderService, shared_data: Path
) -> None:
    uploads = lfw_and_group_photos(shared_data)
    options = service.detection_options()
    alone = [service.faces([upload], options, True, True) for upload in uploads]
    assert sum(len(answer.images[0].faces) for answer in alone) > len(uploads), "the group photo has faces"
    batches, items = detect_batches("count"), detect_batches("sum")
    with ThreadPoolExecutor(len(uploads)) as pool:
        # On the CPU runs do not wait for batch-mates: the requests meet in the runs while the
        # lane is busy, as they would behind another request's run.
        with service.light_lane.turn():
            answers = [pool.submit(service.faces, [upload], options, True, True) for upload in uploads]
            time.sleep(1.0)
        together = [answer.result(GENEROUS_S) for answer in answers]
    bulk = service.faces(uploads, options, True, True)
    assert detect_batches("sum") - items > detect_batches("count") - batches, "some runs were shared"
    assert [answer.model_dump() for answer in together] == [answer.model_dump() for answer in alone]
    assert bulk.images == [answer.images[0] for answer in alone]


def test_a_cancelled_request_raises_and_leaves_nothing_to_run(
    service: EmbedderService, shared_data: Path
) -> None:
    uploads = lfw_and_group_photos(shared_data)[:-1]  # 250 px photos: all on the light lane
    cancellation = Cancellation()
    runs = detect_batches("sum")
    # The request's detections queue behind the lane's holder.
    with service.light_lane.turn(), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            service.faces, uploads, service.detection_options(), True, True, None, cancellation
        )
        time.sleep(0.5)
        cancellation.cancel()  # what the route does when the client goes away
        with pytest.raises(CancelledError):
            answer.result(GENEROUS_S)
    assert service.faces(uploads[:1], service.detection_options(), False, False).images
    assert detect_batches("sum") == runs + 1, "only the last request's image was detected"
