"""Repeated wall-clock timings and their summaries (median, p95, quartiles)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def machine() -> dict[str, object]:
    """The machine that gave a report's timings: its CPU, cores, platform and Python."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Timings on a shared machine are only as good as its load: keep it with them.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def evenly_spaced(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread over the sequence: for photos sorted by name, many different people,
    the same ones in every run."""
    if count >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


@dataclass(frozen=True)
class Timing:
    """Wall seconds of repeated calls that each processed ``units`` items (faces, photos, queries,
    seconds of video)."""

    seconds: tuple[float, ...]
    units: float = 1

    def __post_init__(self) -> None:
        if not self.seconds:
            raise ValueError("a timing needs at least one sample")

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.seconds, q))

    @property
    def median_ms(self) -> float:
        return 1000.0 * self.quantile(0.5)

    @property
    def p95_ms(self) -> float:
        return 1000.0 * self.quantile(0.95)

    @property
    def rate(self) -> float:
        """Items per second at the median call."""
        return self.units / self.quantile(0.5)

    @property
    def rate_iqr(self) -> tuple[float, float]:
        """Items per second at the slow (75th percentile) and the fast (25th) call."""
        return self.units / self.quantile(0.75), self.units / self.quantile(0.25)

    def to_json(self) -> dict[str, float]:
        return {
            "n": len(self.seconds),
            "units": self.units,
            "median_ms": round(self.median_ms, 4),
            "p95_ms": round(self.p95_ms, 4),
            "q1_ms": round(1000.0 * self.quantile(0.25), 4),
            "q3_ms": round(1000.0 * self.quantile(0.75), 4),
        }


def time_calls(
    call: Callable[[T], object],
    inputs: Sequence[T],
    *,
    repeats: int = 1,
    warm_up: int = 1,
    budget_s: float | None = None,
    units: int = 1,
) -> Timing:
    """Times ``call`` on each input, ``repeats`` rounds over all of them.

    The first ``warm_up`` calls are not counted: they open sessions, fill memory pools and
    caches. With ``budget_s``, rounds stop once that much time was spent (at least one call
    is always timed), so the slow baselines cannot make the run drag on at large sizes.
    """
    if not inputs:
        raise ValueError("nothing to time")
    for i in range(warm_up):
        call(inputs[i % len(inputs)])
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        for item in inputs:
            begin = time.perf_counter()
            call(item)
            samples.append(time.perf_counter() - begin)
            if budget_s is not None and time.perf_counter() - started > budget_s:
                return Timing(tuple(samples), units)
    return Timing(tuple(samples), units)
