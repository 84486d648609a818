"""Micro-batching: items submitted by many request threads share model runs.

Written here rather than taken from a library: the dynamic batchers on PyPI (``batched``, Ray
Serve's ``@serve.batch``, mosec, Modal's ``@batched``) batch by item count and time only, most on
asyncio or inside a whole serving framework; none bounds a batch by its cost (a detection's pixels),
holds a lane's lock around each run, drops an item whose request gave up or ran out of time before
its run, or keeps one item's error from failing its batch-mates, which is what the embedder needs
(docs/decisions/embedder.md, "Batching").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from embedder_service.limits import Deadline, DeadlineExceeded, ModelLock
from embedder_service.telemetry import BATCH_ITEMS, BATCH_WAIT_SECONDS

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)  # hashed by identity: an item is the group of its own when it has none
class _Entry(Generic[T, R]):
    item: T
    cost: int
    deadline: Deadline | None
    stage: str
    submitted: float = field(default_factory=time.monotonic)
    future: Future[R] = field(default_factory=Future)


class MicroBatcher(Generic[T, R]):
    """Runs ``run`` on batches of submitted items, from one worker thread of its own.

    The worker takes a first item, then every item that arrives until ``wait_s`` after that
    item's submission, up to ``max_items`` items and ``max_cost`` of ``cost`` in all (the first
    item is taken whatever its cost); a full batch runs at once. ``run`` gets the items and
    returns one result per item. Items are taken in turns between their ``group`` (a request):
    one of each group that has items waiting, in the order the groups arrived, then again, so
    that a request of many images does not make the photo that arrives after it wait for all
    of them.

    ``lane`` (a :class:`~embedder_service.limits.ModelLock`) is held around each run. Once it is
    held, an item whose future was cancelled is left out and one past its deadline gets
    :class:`DeadlineExceeded`. When a run of several items raises, each item is run again on its
    own, so that only the items that fail by themselves get the error: failures are rare (a bug,
    or memory running out, where smaller runs are what is needed anyway), and one more pass over
    the batch costs less than working out which item failed.

    With no wait (``wait_s`` 0: on the CPU), an item submitted while the batcher is idle and its
    lane free runs at once in the submitting thread, as if the worker had taken it alone.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        *,
        wait_s: float,
        max_items: int,
        max_cost: int | None = None,
        cost: Callable[[T], int] = lambda _: 1,
        lane: ModelLock | None = None,
    ) -> None:
        self.name = name  # in metrics
        self._run = run
        self._wait_s = wait_s
        self._max_items = max_items
        self._max_cost = max_cost
        self._cost = cost
        self._lane = lane
        self._changed = threading.Condition()
        # Each group's items in arrival order; the dict's order is the groups' turns.
        self._queues: dict[object, deque[_Entry[T, R]]] = {}
        self._closed = False
        self._busy = False  # a batch is being formed or run
        self._worker: threading.Thread | None = None  # started by the first queued item

    def submit(
        self,
        item: T,
        deadline: Deadline | None = None,
        stage: str = "waiting for a model run",
        group: object = None,
    ) -> Future[R]:
        """Queues ``item``; its future gets its own result or error. ``stage`` names where the
        request stood in the :class:`DeadlineExceeded` it gets if its run starts too late;
        ``group`` (None: a group of its own) is whose turn it waits for."""
        entry: _Entry[T, R] = _Entry(item, self._cost(item), deadline, stage)
        with self._changed:
            if self._closed:
                raise RuntimeError(f"the {self.name} batcher is closed")
            here = self._wait_s == 0 and not self._busy and not self._queues and self._take_lane()
            if here:
                self._busy = True
            else:
                self._queues.setdefault(entry if group is None else group, deque()).append(entry)
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._serve, name=f"batcher-{self.name}", daemon=True
                    )
                    self._worker.start()
                self._changed.notify()
        if here:
            # Nothing to wait for and nobody to share the run with: the submitting thread runs
            # the item itself, sparing two hand-offs between threads.
            try:
                self._run_live([entry])
            finally:
                self._done()
        return entry.future

    def close(self) -> None:
        """Cancels the items still queued, lets a running batch finish, and stops the worker."""
        with self._changed:
            self._closed = True
            for queue in self._queues.values():
                for entry in queue:
                    entry.future.cancel()
            self._queues.clear()
            self._changed.notify()
            worker = self._worker
        if worker is not None:
            worker.join()

    def _take_lane(self) -> bool:
        return self._lane is None or self._lane.take_if_free()

    def _done(self) -> None:
        """After a run: gives the lane back; the worker may form the next batch."""
        if self._lane is not None:
            self._lane.release()
        with self._changed:
            self._busy = False
            self._changed.notify()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                with self._lane.turn() if self._lane is not None else nullcontext():
                    self._run_live(batch)
            except Exception:  # never lose the worker; the futures must not hang either
                log.exception("batch failed", batcher=self.name)
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(RuntimeError(f"the {self.name} batch failed"))
            finally:
                with self._changed:
                    self._busy = False

    def _next_batch(self) -> list[_Entry[T, R]] | None:
        """The next batch (None once closed): waits for a first item, then for batch-mates."""
        with self._changed:
            batch: list[_Entry[T, R]] = []
            cost = 0
            while len(batch) < self._max_items:
                if not batch and self._busy:  # a submitting thread runs its own item
                    self._changed.wait()
                    continue
                if (entry := self._next_in_turn()) is not None:
                    if batch and self._max_cost is not None and cost + entry.cost > self._max_cost:
                        break
                    self._take_turn()
                    batch.append(entry)
                    cost += entry.cost
                    self._busy = True
                    continue
                if self._closed:
                    for entry in batch:
                        entry.future.cancel()
                    return None
                if not batch:
                    self._changed.wait()
                    continue
                # Counted from the first item's arrival: one that waited for the worker waits no more.
                left = batch[0].submitted + self._wait_s - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return batch

    def _next_in_turn(self) -> _Entry[T, R] | None:
        """The item whose turn is next, dropping those given up before their batch (they take
        no room in it). Called holding ``_changed``."""
        while self._queues:
            group, queue = next(iter(self._queues.items()))
            while queue and queue[0].future.cancelled():
                queue.popleft()
            if queue:
                return queue[0]
            del self._queues[group]
        return None

    def _take_turn(self) -> None:
        """Takes the item :meth:`_next_in_turn` returned; its group's next item waits for the
        other groups' turns."""
        group = next(iter(self._queues))
        queue = self._queues.pop(group)
        queue.popleft()
        if queue:
            self._queues[group] = queue

    def _run_live(self, batch: list[_Entry[T, R]]) -> None:
        """Runs the batch's items still wanted and in time, the lane held."""
        started = time.monotonic()
        live = []
        for entry in batch:
            if not entry.future.set_running_or_notify_cancel():
                continue
            if entry.deadline is not None and entry.deadline.remaining() <= 0:
                entry.future.set_exception(DeadlineExceeded(entry.deadline.seconds, entry.stage))
                continue
            BATCH_WAIT_SECONDS.labels(self.name).observe(started - entry.submitted)
            live.append(entry)
        if not live:
            return
        BATCH_ITEMS.labels(self.name).observe(len(live))
        try:
            self._resolve(live, self._run([entry.item for entry in live]))
        except Exception as error:
            if len(live) == 1:
                live[0].future.set_exception(error)
                return
            for entry in live:
                try:
                    self._resolve([entry], self._run([entry.item]))
                except Exception as own:
                    entry.future.set_exception(own)

    @staticmethod
    def _resolve(entries: list[_Entry[T, R]], results: Sequence[R]) -> None:
        if len(results) != len(entries):
            raise RuntimeError(f"a batch of {len(entries)} items gave {len(results)} results")
        for entry, result in zip(entries, results, strict=True):
            entry.future.set_result(result)


class Cancellation:
    """One request's work queued in batchers and pools: :meth:`cancel` drops what has not started.

    Thread-safe: the event loop cancels while the request's thread still submits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[Future[Any]] = []
        self._cancelled = False

    def track(self, future: Future[R]) -> Future[R]:
        """``future``, cancelled at once if the request already is."""
        with self._lock:
            if not self._cancelled:
                self._futures.append(future)
                return future
        future.cancel()
        return future

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            futures, self._futures = self._futures, []
        for future in futures:
            future.cancel()
