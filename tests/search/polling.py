"""Waiting for something observable to happen, instead of sleeping for a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
) -> T:
    """Call ``read`` until ``done`` holds for its value, and return that value; fail the test
    (naming ``what`` and the last value read) when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last read: {value!r}")
        time.sleep(interval_s)
