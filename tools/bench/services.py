"""The product over HTTP: both services started as a user starts them, bulk ingest of an LFW folder
through ``python -m search_service.ingest``, then ``POST /search`` latency with 250x250 photos,
ranked as the service ranks by default (AS-norm once the gallery fills the score cohort) and, as
the baseline in the same run, by cosine (a request that names its threshold)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tools.bench.report import Comparison, Row, Section, latency_row
from tools.bench.timing import Timing, evenly_spaced, time_calls
from tools.eval.pairs import lfw_gallery
from tools.processes import REPO_ROOT, ServiceProcess, embedder_service, reports_ok, search_service

INGEST_GOAL = 20.0  # photos/s
SEARCH_GOAL_MS = 150.0
# The ingest command's closing report, e.g. "ingested:          4992 (21.3 photos/s over 234.1 s)".
_INGESTED = re.compile(r"^ingested:\s+(\d+) \(([\d.]+) photos/s over ([\d.]+) s\)", re.MULTILINE)
_FACES = re.compile(r"^faces indexed:\s+(\d+)", re.MULTILINE)
COHORT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HttpPlan:
    gallery_photos: int | None  # LFW photos ingested (whole identities; None: the whole folder)
    queries: int


@contextlib.contextmanager
def running_embedder(
    models_dir: Path, log: Path, env: Mapping[str, str] | None = None, timeout_s: float = 180
) -> Iterator[ServiceProcess]:
    """The embedder service on a free port, with the models in ``models_dir``, logging to ``log``;
    ``env``: settings beside them."""
    with log.open("wb") as output:
        process = embedder_service(models_dir, output)
        process.env |= env or {}
        with process.running(timeout_s=timeout_s):
            yield process


@dataclass(frozen=True)
class RunningServices:
    """Both services, started as a user starts them, and the scratch folder that holds their data
    and logs (removed when they stop)."""

    work: Path
    embedder: ServiceProcess
    search: ServiceProcess


@contextlib.contextmanager
def running_services(models_dir: Path, scratch_prefix: str) -> Iterator[RunningServices]:
    """The embedder with the models in ``models_dir`` and the search service on it (embedded index,
    a fresh data folder), each on a free port, logging to ``embedder.log`` and ``search.log``."""
    with tempfile.TemporaryDirectory(prefix=scratch_prefix) as scratch:
        work = Path(scratch)
        with running_embedder(models_dir, work / "embedder.log") as embedder:
            search = search_service(str(work / "data"), embedder.url)
            search.env |= {"SEARCH_COHORT_CHECK_INTERVAL_S": "1"}  # the cohort fills right after ingest
            search.ready = reports_ok
            with (work / "search.log").open("wb") as search.output, search.running(timeout_s=180):
                yield RunningServices(work, embedder, search)


def _gallery_folder(lfw_dir: Path, limit: int | None, root: Path) -> tuple[Path, list[Path]]:
    """The folder to ingest and its photos: the LFW folder itself, or links to its first people."""
    photos = lfw_gallery(lfw_dir, limit)
    if limit is None:
        return lfw_dir, [lfw_dir / path for path, _ in photos]
    for path, _ in photos:
        link = root / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((lfw_dir / path).resolve())
    return root, [root / path for path, _ in photos]


def _ingest(folder: Path, url: str) -> tuple[Row, dict[str, Any]]:
    """The bulk ingest command over ``folder``, as a user runs it; its own photos/s figure."""
    command = [sys.executable, "-m", "search_service.ingest", str(folder), "--url", url, "--quiet"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    print(done.stdout, end="", file=sys.stderr)
    counts = _INGESTED.search(done.stdout)
    if counts is None:
        raise RuntimeError(f"unexpected ingest output: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    ingested, rate, seconds = int(counts[1]), float(counts[2]), float(counts[3])
    faces = _FACES.search(done.stdout)
    row = Row(
        "http",
        "bulk ingest of LFW photos (python -m search_service.ingest)",
        rate,
        "photos/s",
        "one run",
        goal=f"≥ {INGEST_GOAL:.0f}/s",
        met=rate >= INGEST_GOAL,
        notes=f"{ingested} photos, {faces[1] if faces else '?'} faces in {seconds:.0f} s"
        + (f"; exit code {done.returncode}" if done.returncode else ""),
    )
    return row, {"photos": ingested, "photos_per_s": rate, "seconds": seconds, "exit_code": done.returncode}


def _wait_for_cohort(url: str) -> dict[str, Any]:
    """The score cohort's state once it is active, or once it is clear it cannot be (fewer stored
    faces than its size)."""
    deadline = time.monotonic() + COHORT_TIMEOUT_S
    while True:
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        cohort: dict[str, Any] = health["score_cohort"]
        if cohort["active"] or health["index"]["faces"] < cohort["size"] or time.monotonic() > deadline:
            return cohort
        time.sleep(0.5)


def _search_latency(url: str, queries: list[Path], params: dict[str, str]) -> tuple[Timing, str]:
    """Latency of searches with each photo, and the answers' score kind."""
    kinds: set[str] = set()
    with httpx.Client(base_url=url, timeout=60) as client:

        def search(path: Path) -> None:
            response = client.post(
                "/search", params=params, files={"image": (path.name, path.read_bytes(), "image/jpeg")}
            )
            response.raise_for_status()
            kinds.add(response.json()["score_kind"])

        timing = time_calls(search, queries, warm_up=3)
    return timing, "/".join(sorted(kinds))


def measure(lfw_dir: Path, models_dir: Path, plan: HttpPlan) -> Section:
    out = Section()
    with running_services(models_dir, "bench-http-") as services:
        url = services.search.url
        folder, photos = _gallery_folder(lfw_dir, plan.gallery_photos, services.work / "gallery")
        ingest_row, ingest = _ingest(folder, url)
        cohort = _wait_for_cohort(url)
        queries = evenly_spaced(photos, plan.queries)
        timing, kind = _search_latency(url, queries, {})
        cosine_threshold = str(httpx.get(f"{url}/healthz").json()["embedder"]["match_threshold"])
        cosine, _ = _search_latency(url, queries, {"threshold": cosine_threshold})
    out.rows.append(ingest_row)
    gallery, median = f"gallery of {ingest['photos']:,} photos", timing.median_ms
    out.rows.append(
        latency_row(
            "http",
            f"POST /search, 250x250 photo, {gallery}, ranked by {kind}",
            timing,
            comparisons=[Comparison("by cosine", f"{cosine.median_ms:.1f} ms", cosine.median_ms / median)],
            goal=f"p50 ≤ {SEARCH_GOAL_MS:.0f} ms",
            met=timing.median_ms <= SEARCH_GOAL_MS,
            notes=f"{len(timing.seconds)} queries (gallery photos), one at a time, k=20; score cohort "
            f"{cohort['members']} of {cohort['size']} faces",
        )
    )
    out.rows.append(
        latency_row(
            "http",
            f"POST /search, 250x250 photo, {gallery}, ranked by cosine (baseline: `threshold` given)",
            cosine,
            notes="the same queries, in the same run",
        )
    )
    out.summary["ingest_photos_per_s"] = f"{ingest['photos_per_s']:.1f}"
    out.summary["search_http_p50_ms"] = f"{timing.median_ms:.1f}"
    out.summary["search_http_cosine_p50_ms"] = f"{cosine.median_ms:.1f}"
    out.details["http"] = {
        "ingest": ingest,
        "search": timing.to_json() | {"score_kind": kind},
        "search_cosine": cosine.to_json(),
        "score_cohort": cohort,
    }
    return out
