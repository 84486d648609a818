"""Bounded work per request: each request's deadline, and the turns requests take on the models.

No HTTP here: the API turns :class:`DeadlineExceeded` into a 503 (docs/decisions/embedder.md,
"Bounded work").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from embedder_service.telemetry import MODEL_QUEUE_SECONDS


class DeadlineExceeded(Exception):
    """A request that cannot finish within its deadline; ``stage`` says where it stood."""

    def __init__(self, deadline_s: float, stage: str) -> None:
        super().__init__(f"the request did not finish within its {deadline_s:g} s deadline ({stage})")
        self.stage = stage


@dataclass(frozen=True)
class Deadline:
    """When a request must be done by, on the monotonic clock; counted from its arrival."""

    expires_at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        return cls((time.monotonic() if start is None else start) + seconds, seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()


class ModelLock:
    """One model run at a time, granted in arrival order.

    Written here because ``threading.Lock`` is not first-come first-served: a request that
    releases it between two of its model runs can take it straight back, so a 64-image request
    would still starve the single photos queued behind it. A ticket queue under a
    ``Condition`` hands the lock to the longest waiter.
    """

    def __init__(self, name: str) -> None:
        self.name = name  # the lane, in metrics
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()
        self._held = False

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Holds the lock for one model run, once all who came before have had theirs.

        It waits without a deadline: the batchers check each item's deadline before its run,
        and a request's thread stops waiting for its results at its deadline.
        """
        started = time.perf_counter()
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                while self._held or self._waiting[0] is not ticket:
                    self._changed.wait()
            finally:
                self._waiting.remove(ticket)
                # The next in line may now be at the front (or the lock free for it).
                self._changed.notify_all()
            self._held = True
        MODEL_QUEUE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        try:
            yield
        finally:
            self.release()

    def take_if_free(self) -> bool:
        """Takes the lock if it is free and nobody waits for it, without waiting; :meth:`release`
        gives it back."""
        with self._changed:
            if self._held or self._waiting:
                return False
            self._held = True
        MODEL_QUEUE_SECONDS.labels(self.name).observe(0.0)
        return True

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()
