"""A circuit breaker that a health probe feeds, and that abandons calls in flight when it opens.

Closed, calls go through. After ``failures_to_open`` failures in a row (health probes, or calls
that failed in transport) it opens: new calls fail at once, and calls already waiting are
cancelled, so a hung server costs a caller seconds, not its read timeout times its retries. The
next success (in practice, the probe's) closes it.

Written here rather than taken from pybreaker, aiobreaker or purgatory: those count failures of
the calls they wrap and let a trial call through after a fixed cool-down; none follows a
background probe, and none abandons calls that are already waiting when the circuit opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)

CIRCUIT_OPEN = Gauge(
    "facesearch_circuit_open", "1 while the circuit to a dependency is open (calls fail at once)", ["name"]
)

T = TypeVar("T")


class CircuitOpenError(Exception):
    """The circuit is open; the message is the last failure's."""


class CircuitBreaker:
    def __init__(self, name: str, failures_to_open: int) -> None:
        self._name = name
        self._failures_to_open = failures_to_open
        self._failures = 0
        self._problem = ""
        self._open = False
        # One future per call in flight, woken when the circuit opens. Futures rather than one
        # asyncio.Event: calls may come from another event loop than the probe's (a test client
        # without its lifespan runs each request in a loop of its own), and an Event is bound to one.
        self._waiters: set[asyncio.Future[None]] = set()
        CIRCUIT_OPEN.labels(name).set(0)

    @property
    def is_open(self) -> bool:
        return self._open

    def success(self) -> None:
        self._failures = 0
        if self._open:
            self._open = False
            CIRCUIT_OPEN.labels(self._name).set(0)
            log.info("circuit closed", name=self._name)

    def failure(self, problem: str) -> None:
        self._failures += 1
        self._problem = problem
        if not self._open and self._failures >= self._failures_to_open:
            self._open = True
            CIRCUIT_OPEN.labels(self._name).set(1)
            log.warning("circuit opened", name=self._name, failures=self._failures, problem=problem)
            for waiter in list(self._waiters):
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, unless the circuit is open or opens first: then ``work`` is
        cancelled and CircuitOpenError raised."""
        if self._open:
            work.close()  # never started: closed, so that it is not reported as never awaited
            raise CircuitOpenError(self._problem)
        task = asyncio.ensure_future(work)
        opened = asyncio.get_running_loop().create_future()
        self._waiters.add(opened)
        try:
            done, _ = await asyncio.wait({task, opened}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # our caller gave up: leave nothing running
            task.cancel()
            raise
        finally:
            self._waiters.discard(opened)
        if task not in done:
            task.cancel()
            # Let the abandoned call unwind (close its connection) before the caller moves on.
            await asyncio.wait({task})
        if task.cancelled():
            raise CircuitOpenError(self._problem)
        return task.result()  # it may have ended while being cancelled: then its outcome stands


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
