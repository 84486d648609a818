"""The circuit breaker on its own: when it opens and closes, and what happens to calls meanwhile.
Through HTTP, with a hung embedder process, it is tested in tests/search/api/test_abuse.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from search_service.clients.breaker import CircuitBreaker, CircuitOpenError


async def _answer(value: str) -> str:
    return value


def test_opens_after_failures_in_a_row_and_closes_on_success() -> None:
    async def scenario() -> None:
        breaker = CircuitBreaker("test-flaky", failures_to_open=2)
        breaker.failure("first")
        breaker.success()  # not in a row: the count starts again
        breaker.failure("second")
        assert not breaker.is_open and await breaker.call(_answer("through")) == "through"
        breaker.failure("third")
        assert breaker.is_open
        with pytest.raises(CircuitOpenError, match=r"^third$"):
            await breaker.call(_answer("refused"))
        breaker.success()
        assert not breaker.is_open and await breaker.call(_answer("again")) == "again"

    asyncio.run(scenario())


def test_a_call_in_flight_is_abandoned_when_the_circuit_opens() -> None:
    abandoned = asyncio.Event()

    async def hung() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return "never"

    async def scenario() -> float:
        breaker = CircuitBreaker("test-hung", failures_to_open=1)
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.1, breaker.failure, "probe timed out")
        with pytest.raises(CircuitOpenError, match=r"^probe timed out$"):
            await breaker.call(hung())
        assert abandoned.is_set()  # cancelled, not left running
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def test_a_call_that_ends_first_keeps_its_outcome() -> None:
    async def failing() -> str:
        raise ValueError("its own error")

    async def scenario() -> None:
        breaker = CircuitBreaker("test-ends", failures_to_open=1)
        with pytest.raises(ValueError, match="its own error"):
            await breaker.call(failing())
        assert not breaker.is_open

    asyncio.run(scenario())
