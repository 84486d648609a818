"""``python -m tools.bench`` (``make bench``): speed of every component, with baselines from the same run.

Prints one markdown table (medians, spreads, speed-ups against the baselines), writes
``reports/bench.json`` and PNG plots, and ends with a line of key=value pairs. ``--quick`` is
sized for CI (about 2 minutes, galleries up to 100k, plus 1 minute of load); the full run takes
about 18 minutes on 2 cores (3 of them the load section's two phases of 60 s), a third of it
building the 1M-face HNSW graph the first time (then cached under ``reports/cache``, with the LFW
embeddings it shares with ``make eval``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from embedder_service.models.manifest import load_manifest
from embedder_service.settings import EmbedderSettings
from facesearch_common.logging import configure_logging
from search_service.settings import SearchSettings
from tools.bench import embedder, gpu, index, load, services, video
from tools.bench.gallery import real_embeddings
from tools.bench.paths import default_data
from tools.bench.report import Section, draw, markdown, summary_line, write_json
from tools.bench.timing import machine

# gpu: skipped, with one line, where ONNX Runtime offers no CUDA provider (tools/bench/gpu.py).
SECTIONS = ("embedder", "index", "http", "video", "load", "gpu")


@dataclass(frozen=True)
class Plan:
    """How much of everything to measure: CI-sized with --quick, thorough otherwise."""

    sizes: list[int]
    queries: int
    index_budget_s: float
    real_photos: int | None  # LFW photos embedded for the index gallery (None: all)
    embedder: embedder.EmbedderPlan
    http: services.HttpPlan
    video: video.VideoPlan
    load: load.LoadPlan
    gpu: gpu.GpuPlan


QUICK = Plan(
    sizes=[1_000, 10_000, 100_000],
    queries=100,
    index_budget_s=10.0,
    real_photos=400,
    embedder=embedder.EmbedderPlan(
        photos=20,
        frames=3,
        frame_rounds=2,
        batch_faces=64,
        dlib_budget_s=3.0,
        peer_photos=10,
        reference_photos=10,
        reference_frames=2,
    ),
    http=services.HttpPlan(gallery_photos=200, queries=30),
    video=video.VideoPlan(rounds=1),
    load=load.LoadPlan(clients=32, seconds=20.0, gallery_photos=200),
    gpu=gpu.QUICK_PLAN,
)
FULL = Plan(
    sizes=[1_000, 10_000, 100_000, 1_000_000],
    queries=300,
    index_budget_s=60.0,
    real_photos=None,
    embedder=embedder.EmbedderPlan(
        photos=100,
        frames=10,
        frame_rounds=3,
        batch_faces=512,
        dlib_budget_s=20.0,
        peer_photos=40,
        reference_photos=40,
        reference_frames=5,
    ),
    http=services.HttpPlan(gallery_photos=None, queries=200),
    video=video.VideoPlan(rounds=3),
    load=load.LoadPlan(clients=32, seconds=60.0, gallery_photos=500),
    gpu=gpu.GpuPlan(),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (a few minutes, galleries ≤ 100k)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    parser.add_argument(
        "--lfw-dir",
        type=Path,
        default=Path(os.environ["LFW_DIR"]) if os.environ.get("LFW_DIR") else None,
        help="LFW-layout photo folder (default: DATA/lfw_dev)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="gallery sizes for the index (default by mode)")
    parser.add_argument("--queries", type=int, help="queries per gallery size (default by mode)")
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="*",
        default=[256, 512],
        help="HNSW search breadths to measure besides the service's setting (recall against latency)",
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        help="length of each load phase (default by mode: 20 s quick, 60 s full)",
    )
    parser.add_argument(
        "--load-clients", type=int, help="concurrent clients of the load section (default 32)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--cache-dir", type=Path, help="embeddings and HNSW graphs (default: OUT/cache)")
    parser.add_argument(
        "--build-threads", type=int, default=os.cpu_count() or 1, help="threads for building HNSW graphs"
    )
    return parser.parse_args(argv)


def match_threshold() -> float:
    """The service's match threshold: its setting, else the one calibrated for the embedding model."""
    configured = SearchSettings().match_threshold
    if configured is not None:
        return configured
    settings = EmbedderSettings()
    return load_manifest(settings.models_dir).encoder(settings.encoder).match_threshold


def run_index(args: argparse.Namespace, plan: Plan, cache_dir: Path) -> Section:
    options = index.IndexOptions(
        sizes=args.sizes or plan.sizes,
        budget_s=plan.index_budget_s,
        cache_dir=cache_dir,
        threshold=match_threshold(),
        build_threads=args.build_threads,
        # Quick runs never build the 1M graph (11-13 minutes on both cores); a cached one is still used.
        max_hnsw_build=200_000 if args.quick else None,
        ef_search=list(dict.fromkeys([SearchSettings().hnsw.ef_search, *args.ef_search])),
    )
    real = real_embeddings(args.lfw_dir, cache_dir, plan.real_photos, EmbedderSettings())
    return index.run(real, args.queries or plan.queries, options)


def load_plan(args: argparse.Namespace, plan: Plan) -> load.LoadPlan:
    """The mode's load plan, with the lengths and client counts given on the command line."""
    return dataclasses.replace(
        plan.load,
        seconds=args.load_seconds or plan.load.seconds,
        clients=args.load_clients or plan.load.clients,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json_output=False)
    args.lfw_dir = args.lfw_dir or args.data / "lfw_dev"
    plan = QUICK if args.quick else FULL
    cache_dir = args.cache_dir or args.out / "cache"
    started = time.perf_counter()
    result = Section()
    runners = {
        "embedder": lambda: embedder.measure(args.lfw_dir, args.data, plan.embedder, EmbedderSettings()),
        "index": lambda: run_index(args, plan, cache_dir),
        "http": lambda: services.measure(args.lfw_dir, EmbedderSettings().models_dir, plan.http),
        "video": lambda: video.measure(args.data, EmbedderSettings().models_dir, cache_dir, plan.video),
        "load": lambda: load.measure(args.lfw_dir, EmbedderSettings().models_dir, load_plan(args, plan)),
        "gpu": lambda: gpu.section(args.lfw_dir, args.data, args.out, plan.gpu),
    }
    for name in args.sections:
        print(f"== {name}", file=sys.stderr, flush=True)
        result.extend(runners[name]())
    elapsed = time.perf_counter() - started
    table = markdown(result.rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m tools.bench", *(sys.argv[1:] if argv is None else argv)]),
        "mode": "quick" if args.quick else "full",
        "sections": args.sections,
        # What the README may quote: the full run of every section, the load for its full length.
        "complete": not args.quick
        and set(args.sections) == set(SECTIONS)
        and load_plan(args, plan) == plan.load,
        "elapsed_s": round(elapsed, 1),
        "machine": machine(),
        "versions": {name: version(name) for name in ("onnxruntime", "faiss-cpu", "numpy")},
    }
    write_json(result, metadata, args.out / "bench.json")
    for plot in result.plots:
        draw(plot, args.out)
    print(f"wrote {args.out}/bench.json and {len(result.plots)} plot(s) in {elapsed:.0f} s", file=sys.stderr)
    print(summary_line(result.summary | {"elapsed_s": f"{elapsed:.0f}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
