"""Both services under load (issue 10): concurrent clients mixing search and ingest, then the same
load while huge photos arrive.

Both services run as processes, as a user starts them (embedded index, a fresh data directory,
the real models); a gallery of LFW photos is ingested first. Then, for ``seconds`` each:

* phase A: ``clients`` clients (one ``httpx.AsyncClient`` each, all on one event loop) send
  requests back to back, each at random (seeded) either ``POST /search`` with a gallery photo
  or, with probability ``ingest_share``, ``POST /images`` with one LFW photo from beyond the
  gallery, never sent before (so never a duplicate);
* phase B: the same load, while one more client sends a 6300x6300 all-black 1-bit PNG (4.9 KB,
  the photo of issue 10) to ``POST /search`` every ``large_every_s`` seconds, or as soon as the
  previous one is answered if that took longer.

Every answer is judged (:func:`verdict`): 2xx is ok; a 503 with ``Retry-After`` is the service
shedding load, and a 422 "no face" for a search photo is the right answer to it: both are
counted apart; anything else, no answer included, is an error. For a huge photo the refusals
issue 10 designs (413 over the pixel budget, 422 no face) count as ok. Latency percentiles are
over the ok answers. The resident memory (VmRSS) of both services is read before each phase,
after it (``settle_s`` after its last answer) and every 0.2 s during it, for the peak. The
embedder's "before" for phase B is its level after phase A: the same load without huge photos.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tools.bench.report import Row, Section, number
from tools.bench.services import running_services
from tools.bench.timing import Timing, evenly_spaced
from tools.eval.pairs import lfw_gallery
from tools.processes import ServiceProcess

LARGE_SIDE = 6300  # the photo: 39.7 MP, just under the embedder's 40 MP per-image limit
P99_GOAL = 2.0  # phase B's p99 of normal searches, at most this many times phase A's
RSS_GOAL = 0.20  # the embedder's RSS after phase B within this share of its level before
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadPlan:
    clients: int
    seconds: float  # per phase
    gallery_photos: int  # LFW photos ingested before the load (whole identities)
    ingest_share: float = 0.2  # of the clients' requests, POST /images; the rest POST /search
    large_every_s: float = 2.0  # phase B: one huge photo sent this often (or as soon as the last is answered)
    settle_s: float = 3.0  # idle time before memory is read after a phase
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    kind: str  # "search", "ingest" or "large" (a huge photo to POST /search)
    status: int | None  # None: no answer (a transport error or a timeout, named in detail)
    seconds: float
    retry_after: bool = False
    detail: str = ""


def verdict(outcome: Outcome) -> str:
    """What one answer counts as: "ok", "shed" (a 503 with Retry-After), "no face" (a search photo
    without one) or "error"."""
    status = outcome.status
    if status is not None and 200 <= status < 300:
        return "ok"
    if status == 503 and outcome.retry_after:
        return "shed"
    if outcome.kind == "large" and status in (413, 422):
        return "ok"  # over the pixel budget, or no face found on the downscaled copy: both designed answers
    if outcome.kind == "search" and status == 422 and "no face" in outcome.detail:
        return "no face"
    return "error"


@dataclass(frozen=True)
class Summary:
    """The answers to one kind of request in one phase."""

    requests: int
    verdicts: dict[str, int]
    statuses: dict[str, int]  # "200": n, ..., "no answer": n
    per_s: float
    p50_ms: float | None  # over ok answers; None without any
    p99_ms: float | None
    errors: list[str]  # the first few, as "status: detail"

    @property
    def error_count(self) -> int:
        return self.verdicts.get("error", 0)


def summarize(outcomes: Sequence[Outcome], wall_s: float, kept_errors: int = 5) -> dict[str, Summary]:
    """One :class:`Summary` per kind of request, in the order the kinds first occur."""
    by_kind: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    summaries = {}
    for kind, group in by_kind.items():
        verdicts = [verdict(outcome) for outcome in group]
        ok = tuple(outcome.seconds for outcome, said in zip(group, verdicts, strict=True) if said == "ok")
        timing = Timing(ok) if ok else None
        errors = [
            f"{'no answer' if o.status is None else o.status}: {o.detail}"
            for o, said in zip(group, verdicts, strict=True)
            if said == "error"
        ]
        summaries[kind] = Summary(
            requests=len(group),
            verdicts=dict(Counter(verdicts)),
            statuses=dict(Counter("no answer" if o.status is None else str(o.status) for o in group)),
            per_s=len(group) / wall_s,
            p50_ms=None if timing is None else 1000.0 * timing.quantile(0.5),
            p99_ms=None if timing is None else 1000.0 * timing.quantile(0.99),
            errors=errors[:kept_errors],
        )
    return summaries


def vm_rss_mb(status_text: str) -> float:
    """Resident memory in MiB from the text of ``/proc/<pid>/status`` (its ``VmRSS:  123 kB`` line)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS line: not a /proc/<pid>/status of a live process")


def rss_mb(pid: int) -> float:
    return vm_rss_mb(Path(f"/proc/{pid}/status").read_text())


@dataclass
class Memory:
    """RSS of each service (by name) before and after a phase, and its peak during it (MiB)."""

    before: dict[str, float]
    peak: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def change(self, name: str) -> float:
        """After against before, as a share of before (0.1: 10% more)."""
        return self.after[name] / self.before[name] - 1


@dataclass(frozen=True)
class Phase:
    outcomes: list[Outcome]
    wall_s: float
    memory: Memory

    def summaries(self) -> dict[str, Summary]:
        return summarize(self.outcomes, self.wall_s)


def large_png(side: int = LARGE_SIDE) -> bytes:
    """An all-black 1-bit PNG of side x side pixels: a few KB that decode to side² RGB pixels."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


async def _timed(client: httpx.AsyncClient, kind: str, path: str, name: str, data: bytes) -> Outcome:
    started = time.perf_counter()
    try:
        response = await client.post(path, files={"image": (name, data, "application/octet-stream")})
    except httpx.HTTPError as error:
        return Outcome(kind, None, time.perf_counter() - started, detail=f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - started
    detail = ""
    if not response.is_success:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        detail = str(body.get("detail") if isinstance(body, dict) else body)[:300]
    return Outcome(kind, response.status_code, seconds, "retry-after" in response.headers, detail)


class _Photos:
    """Query photos to cycle through, and a pool of photos to ingest, each sent once."""

    def __init__(self, queries: Sequence[Path], fresh: Sequence[Path]) -> None:
        self.queries = [(path.name, path.read_bytes()) for path in queries]
        self._fresh: Iterator[Path] = iter(fresh)

    def next_fresh(self) -> tuple[str, bytes] | None:
        path = next(self._fresh, None)
        return None if path is None else (path.name, path.read_bytes())


async def _client(
    url: str, deadline: float, rng: random.Random, photos: _Photos, share: float, out: list[Outcome]
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        while time.perf_counter() < deadline:
            fresh = photos.next_fresh() if rng.random() < share else None
            if fresh is not None:
                out.append(await _timed(client, "ingest", "/images", *fresh))
            else:
                name, data = rng.choice(photos.queries)
                out.append(await _timed(client, "search", "/search", name, data))


async def _large_sender(url: str, deadline: float, every_s: float, data: bytes, out: list[Outcome]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        first = time.perf_counter()
        for slot in itertools.count(1):
            if time.perf_counter() >= deadline:
                return
            out.append(await _timed(client, "large", "/search", "large.png", data))
            await asyncio.sleep(max(0.0, first + slot * every_s - time.perf_counter()))


async def _sample_peaks(pids: dict[str, int], peak: dict[str, float]) -> None:
    while True:
        for name, pid in pids.items():
            peak[name] = max(peak.get(name, 0.0), rss_mb(pid))
        await asyncio.sleep(0.2)


async def _phase(
    url: str, pids: dict[str, int], plan: LoadPlan, photos: _Photos, seed: int, large: bytes | None
) -> Phase:
    memory = Memory(before={name: rss_mb(pid) for name, pid in pids.items()})
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    deadline = started + plan.seconds
    sampler = asyncio.create_task(_sample_peaks(pids, memory.peak))
    tasks = [
        _client(url, deadline, random.Random(seed * 1000 + i), photos, plan.ingest_share, outcomes)
        for i in range(plan.clients)
    ]
    if large is not None:
        tasks.append(_large_sender(url, deadline, plan.large_every_s, large, outcomes))
    await asyncio.gather(*tasks)
    wall_s = time.perf_counter() - started
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await asyncio.sleep(plan.settle_s)
    memory.after = {name: rss_mb(pid) for name, pid in pids.items()}
    return Phase(outcomes, wall_s, memory)


def _ingest_gallery(url: str, photos: Sequence[Path], batch: int = 16) -> None:
    """Store the gallery, in batches of ``batch`` photos."""
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for start in range(0, len(photos), batch):
            files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[start : start + batch]]
            response = client.post("/images", files=files)
            response.raise_for_status()


def _pid(service: ServiceProcess) -> int:
    assert service.process is not None, "the service is not running"
    return service.process.pid


# Each kind of request as the table names it, in the table's order.
_REQUESTS = {
    "search": "POST /search, a gallery photo",
    "ingest": "POST /images, one new photo",
    "large": f"POST /search, the {LARGE_SIDE}x{LARGE_SIDE} PNG",
}


def _latency_row(measurement: str, summary: Summary) -> Row:
    verdicts = ", ".join(f"{count} {name}" for name, count in sorted(summary.verdicts.items()))
    return Row(
        "load",
        measurement,
        summary.p50_ms,
        "ms",
        "-" if summary.p99_ms is None else f"p99 {number(summary.p99_ms)}",
        goal="0 errors",
        met=summary.error_count == 0,
        notes=f"{summary.requests} requests, {summary.per_s:.1f}/s: {verdicts}"
        + (f"; first error: {summary.errors[0]}" if summary.errors else ""),
    )


def _rss_row(measurement: str, memory: Memory, name: str, **extra: Any) -> Row:
    return Row(
        "load",
        measurement,
        memory.after[name],
        "MiB",
        f"peak {number(memory.peak[name])}",
        notes=f"before {number(memory.before[name])} MiB ({100 * memory.change(name):+.0f}%)",
        **extra,
    )


def p99_ratio(a: dict[str, Summary], b: dict[str, Summary]) -> float | None:
    """Phase B's p99 of normal searches over phase A's; None when either phase has none."""
    before, during = a.get("search"), b.get("search")
    if before is None or during is None or not before.p99_ms or during.p99_ms is None:
        return None
    return during.p99_ms / before.p99_ms


def section(plan: LoadPlan, a: Phase, b: Phase, large_bytes: int) -> Section:
    """The table's rows, the key figures and the raw numbers of both phases."""
    out = Section()
    sa, sb = a.summaries(), b.summaries()
    phase_a = f"A. {plan.clients} clients, {plan.seconds:g} s"
    phase_b = f"B. as A, and a {LARGE_SIDE}x{LARGE_SIDE} PNG every {plan.large_every_s:g} s"
    out.rows += [
        _latency_row(f"{phase_a}: {what}", sa[kind]) for kind, what in _REQUESTS.items() if kind in sa
    ]
    out.rows += [_rss_row(f"{phase_a}: {name} RSS", a.memory, name) for name in a.memory.before]
    rows_b = {
        kind: _latency_row(f"{phase_b}: {what}", sb[kind]) for kind, what in _REQUESTS.items() if kind in sb
    }
    ratio = p99_ratio(sa, sb)
    if "search" in rows_b:
        row = rows_b["search"]
        row.goal = f"p99 ≤ {P99_GOAL:g}x A's; 0 errors"
        row.met = bool(row.met) and ratio is not None and ratio <= P99_GOAL
        row.notes = f"p99 {'-' if ratio is None else f'{ratio:.2f}x'} A's; {row.notes}"
    if "large" in rows_b:
        rows_b["large"].notes = f"{large_bytes / 1024:.1f} KB each; {rows_b['large'].notes}"
    out.rows += rows_b.values()
    change = b.memory.change("embedder")
    # Back within the margin of where it was before B; lower is fine.
    embedder = _rss_row(
        f"{phase_b}: embedder RSS",
        b.memory,
        "embedder",
        goal=f"≤ {100 * RSS_GOAL:.0f}% over before",
        met=change <= RSS_GOAL,
    )
    embedder.notes += f"; idle, before A: {number(a.memory.before['embedder'])} MiB"
    out.rows += [embedder, _rss_row(f"{phase_b}: search RSS", b.memory, "search")]
    normal = sa.get("search")
    out.summary |= {
        "load_errors": str(sum(s.error_count for s in [*sa.values(), *sb.values()])),
        "load_shed": str(sum(s.verdicts.get("shed", 0) for s in [*sa.values(), *sb.values()])),
        "load_search_p50_ms": _ms(normal.p50_ms if normal else None),
        "load_search_p99_ms": _ms(normal.p99_ms if normal else None),
        "load_large_p99_ratio": "-" if ratio is None else f"{ratio:.2f}",
        "load_embedder_rss_change_pct": f"{100 * change:+.1f}",
    }
    out.details["load"] = {
        "plan": asdict(plan),
        "large_png_bytes": large_bytes,
        "p99_ratio": ratio,
        "phases": {
            name: {
                "wall_s": round(phase.wall_s, 2),
                "memory_mib": asdict(phase.memory),
                "requests": {kind: asdict(summary) for kind, summary in summaries.items()},
            }
            for name, phase, summaries in (("A", a, sa), ("B", b, sb))
        },
    }
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def measure(lfw_dir: Path, models_dir: Path, plan: LoadPlan) -> Section:
    everyone = [lfw_dir / path for path, _ in lfw_gallery(lfw_dir)]
    gallery = [lfw_dir / path for path, _ in lfw_gallery(lfw_dir, plan.gallery_photos)]
    # Query photos from across the gallery; photos to ingest from beyond it, shuffled so that
    # people arrive in no particular order, the same order every run.
    fresh = everyone[len(gallery) :]
    random.Random(plan.seed).shuffle(fresh)
    photos = _Photos(evenly_spaced(gallery, 100), fresh)
    large = large_png()
    with running_services(models_dir, "bench-load-") as services:
        url = services.search.url
        _ingest_gallery(url, gallery)
        pids = {"embedder": _pid(services.embedder), "search": _pid(services.search)}
        a = asyncio.run(_phase(url, pids, plan, photos, plan.seed, None))
        b = asyncio.run(_phase(url, pids, plan, photos, plan.seed + 1, large))
    return section(plan, a, b, len(large))
