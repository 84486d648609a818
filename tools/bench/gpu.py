"""``make bench``'s GPU section: the embedder on ONNX Runtime's CUDA provider, against the goals of issue 9.

    python -m tools.bench --sections gpu     # within make bench
    python -m tools.bench.gpu [options]      # alone: what tools/gpu/run.sh runs on a lent GPU machine

Skipped with one line when ONNX Runtime offers no CUDAExecutionProvider (``--allow-cpu`` measures
anyway, on whatever runs: for tests). Otherwise measures, on LFW photos and 1280x720 video frames:

- photos/s in process: ``EmbedderService.faces`` called from many threads, one photo per call, and
  bulk calls of several photos (the batching scheduler coalesces concurrent calls);
- photos/s over HTTP: the embedder under uvicorn (a child process), ``POST /faces`` batches from
  concurrent clients;
- 1280x720 frames/s: JPEG frames in batches, with the options the video ingest sends;
- the encoder's faces/s by batch size, on aligned chips of real faces;
- the CUDA session's largest difference from the CPU session on the same photos (embeddings, boxes);
- TF32 on (``EMBEDDER_CUDA_TF32=true``, the documented fast mode): encoder faces/s and its error;
- the peer: facenet-pytorch's MTCNN on the same GPU, the same photos in batches.

Each throughput is a fixed-time run (after a warm-up run), so that the section takes about the same
time whether the GPU path is fast or slow. Writes ``OUT/bench-gpu.json``: device, versions, date,
commit, every figure and each goal with whether it was met.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import importlib
import importlib.metadata
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import onnxruntime as ort

from embedder_service.imaging import decode_image
from embedder_service.models.pipeline import DetectionOptions, FacePipeline
from embedder_service.service import EmbedderService, build_pipeline
from embedder_service.settings import EmbedderSettings
from facesearch_common.logging import configure_logging
from search_service.services.frames import min_face_size
from search_service.settings import VideoSettings
from tools.bench.paths import REPO_ROOT, default_data
from tools.bench.report import Row, Section, markdown, skipped_row
from tools.bench.services import running_embedder
from tools.bench.timing import Timing, evenly_spaced, time_calls
from tools.eval.pairs import lfw_gallery

T = TypeVar("T")
Upload = tuple[str, bytes]

CUDA = "CUDAExecutionProvider"
PROVIDERS = [CUDA, "CPUExecutionProvider"]
# The frames of tools/gpu/stage_inputs.py: tools.bench.embedder.FRAME_SIZE, whose module needs PyAV.
FRAME_SIDE = 1280
REPORT = "bench-gpu.json"


@dataclass(frozen=True)
class Goal:
    key: str  # the figure of the report it bounds
    bound: float
    text: str
    at_most: bool = False  # the figure must be at most the bound (else: at least)

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.bound if self.at_most else value >= self.bound


GOALS = (
    Goal("pipeline_photos_per_s", 1_500, "≥ 1,500 photos/s in process"),
    Goal("http_photos_per_s", 1_000, "≥ 1,000 photos/s over HTTP"),
    Goal("frames_720p_per_s", 300, "≥ 300 frames/s at 1280x720"),
    Goal("encoder_faces_per_s", 20_000, "≥ 20,000 faces/s (encoder)"),
    Goal("max_abs_diff_vs_cpu", 1e-4, "≤ 1e-4 max abs difference from the CPU (TF32 off)", at_most=True),
    Goal("speedup_vs_peer", 10, "≥ 10x facenet-pytorch's MTCNN on the same GPU"),
)


@dataclass(frozen=True)
class GpuPlan:
    """Sizes of the run; the defaults take about 4 minutes on an H100."""

    seconds: float = field(default=10.0, metadata={"help": "length of each throughput run"})
    warm_s: float = field(default=2.0, metadata={"help": "unmeasured run before each throughput run"})
    photos: int = field(default=1000, metadata={"help": "LFW photos, spread over the folder, cycled"})
    threads: int = field(default=64, metadata={"help": "concurrent in-process calls"})
    bulk: int = field(default=16, metadata={"help": "photos per bulk call"})
    http_clients: int = field(default=32, metadata={"help": "concurrent HTTP clients"})
    http_batch: int = field(default=8, metadata={"help": "photos per POST /faces"})
    frames: int = field(default=8, metadata={"help": "video frames, cycled"})
    frame_batch: int = field(
        default=VideoSettings().batch_frames, metadata={"help": "frames per call (the video ingest's)"}
    )
    encoder_batches: tuple[int, ...] = field(
        default=(1, 8, 32, 64, 256), metadata={"help": "encoder batch sizes; the largest is the figure"}
    )
    encoder_seconds: float = field(default=3.0, metadata={"help": "time per encoder batch size"})
    error_photos: int = field(default=64, metadata={"help": "photos compared between CUDA and CPU"})
    peer_batch: int = field(default=64, metadata={"help": "photos per facenet-pytorch call"})
    peer_seconds: float = field(default=10.0, metadata={"help": "time for facenet-pytorch"})


QUICK_PLAN = GpuPlan(
    seconds=4.0, warm_s=1.0, photos=300, encoder_seconds=1.0, error_photos=30, peer_seconds=4.0
)


@dataclass(frozen=True)
class Throughput:
    """Work done by concurrent callers over a wall-clock span."""

    units: int  # photos or frames
    calls: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.units / self.seconds

    def to_json(self) -> dict[str, float]:
        return {"units": self.units, "calls": self.calls, "seconds": round(self.seconds, 3)}


def sustained(
    call: Callable[[T], object], items: Sequence[T], *, threads: int, seconds: float, units: int
) -> Throughput:
    """``threads`` callers run ``call`` on the items in turn (cycling) until ``seconds`` have passed;
    each call does ``units`` of work. Calls still running then are waited for and counted, and the
    span runs to the last one's end. The first error ends the run and is raised."""
    if not items:
        raise ValueError("nothing to run")
    turns = itertools.count()
    done = [0] * threads
    failed = threading.Event()
    started = time.perf_counter()
    deadline = started + seconds

    def caller(index: int) -> None:
        while time.perf_counter() < deadline and not failed.is_set():
            try:
                call(items[next(turns) % len(items)])
            except BaseException:
                failed.set()  # the other callers stop at their next turn
                raise
            done[index] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(caller, range(threads)))
    calls = sum(done)
    return Throughput(calls * units, calls, time.perf_counter() - started)


def check_goals(figures: Mapping[str, float | None]) -> dict[str, dict[str, Any]]:
    """Each goal's bound, the figure it bounds and whether it was met (None: not measured)."""
    return {
        goal.key: {"goal": goal.text, "value": figures.get(goal.key), "met": goal.met(figures.get(goal.key))}
        for goal in GOALS
    }


def speedup(ours: float | None, peer: float | None) -> float | None:
    return None if ours is None or not peer else ours / peer


def skip_reason() -> str | None:
    """Why the section cannot run here, or None."""
    offered = ort.get_available_providers()
    if CUDA in offered:
        return None
    return f"ONNX Runtime {ort.__version__} offers no {CUDA} (only {', '.join(offered)})"


@dataclass(frozen=True)
class Inputs:
    photos: list[Upload]  # LFW JPEG files
    frames: list[Upload]  # 1280x720 JPEG frames


def read_inputs(lfw_dir: Path, frames_dir: Path | None, data_dir: Path, plan: GpuPlan) -> Inputs:
    """The photos and frames; without ``frames_dir``, the frames are sampled from the shared clips."""
    paths = evenly_spaced([lfw_dir / path for path, _ in lfw_gallery(lfw_dir)], plan.photos)
    photos = [(path.name, path.read_bytes()) for path in paths]
    if frames_dir is None:
        # Needs PyAV, which the GPU machines lack: there the frames are staged beforehand.
        from tools.gpu.stage_inputs import encoded_frames

        frames = [(f"frame{n:03d}.jpg", jpeg) for n, jpeg in enumerate(encoded_frames(data_dir, plan.frames))]
        return Inputs(photos, frames)
    return Inputs(photos, _read_frames(frames_dir, plan.frames))


def _read_frames(directory: Path, count: int) -> list[Upload]:
    files = sorted(directory.glob("*.jpg"))[:count]
    if not files:
        raise FileNotFoundError(f"no JPEG frames in {directory}")
    return [(path.name, path.read_bytes()) for path in files]


def _settings(models_dir: Path, allow_cpu: bool, **overrides: Any) -> EmbedderSettings:
    """The service's settings (EMBEDDER_* of the environment apply) on the CUDA provider."""
    return EmbedderSettings(
        **{"models_dir": models_dir, "providers": PROVIDERS, "require_gpu": not allow_cpu, **overrides}
    )


def _check_providers(in_use: list[str], allow_cpu: bool) -> None:
    # ONNX Runtime falls back to the CPU when the CUDA libraries fail to load: no GPU figure then.
    if CUDA not in in_use and not allow_cpu:
        raise RuntimeError(f"the sessions run on {in_use}, not on {CUDA}")


def _batches(items: Sequence[T], size: int) -> list[list[T]]:
    """Groups of ``size`` items taken in turn, wrapping around, enough to use each item once."""
    count = max(1, math.ceil(len(items) / size))
    return [[items[(i * size + j) % len(items)] for j in range(size)] for i in range(count)]


def _progress(message: str) -> None:
    print(f"gpu: {message}", file=sys.stderr, flush=True)


def _in_process(service: EmbedderService, inputs: Inputs, plan: GpuPlan) -> dict[str, Throughput]:
    """Photos one per call and in bulk calls, then frames in batches, from many threads."""
    photo_options = service.detection_options()
    video = VideoSettings()
    # As the video ingest asks.
    frame_options = service.detection_options(
        min_face_size=min_face_size(FRAME_SIDE, video), threshold=video.detection_threshold
    )

    def run(options: DetectionOptions, uploads: list[Upload]) -> object:
        return service.faces(uploads, options, embeddings=True, landmarks=False)

    runs = {
        "pipeline": ([[photo] for photo in inputs.photos], photo_options, 1),
        "pipeline_bulk": (_batches(inputs.photos, plan.bulk), photo_options, plan.bulk),
        "frames_720p": (_batches(inputs.frames, plan.frame_batch), frame_options, plan.frame_batch),
    }
    results = {}
    for name, (items, options, units) in runs.items():
        call = functools.partial(run, options)
        sustained(call, items, threads=plan.threads, seconds=plan.warm_s, units=units)
        results[name] = sustained(call, items, threads=plan.threads, seconds=plan.seconds, units=units)
        _progress(f"{name}: {results[name].rate:,.1f}/s")
    return results


def _chips(pipeline: FacePipeline, images: Sequence[np.ndarray], options: DetectionOptions) -> np.ndarray:
    chips = pipeline.align(images, [pipeline.detect(image, options) for image in images])
    if len(chips) == 0:
        raise RuntimeError("no face found in the benchmark photos")
    return chips


def _encoder_rates(
    pipeline: FacePipeline, chips: np.ndarray, batches: Sequence[int], seconds: float
) -> dict[int, Timing]:
    """Faces/s of the encoder alone (no mirror averaging) per batch size, on real chips."""
    rates = {}
    for size in batches:
        runs = [np.take(chips, range(i * size, (i + 1) * size), axis=0, mode="wrap") for i in range(4)]
        rates[size] = time_calls(
            lambda batch: pipeline.encoder.embed(batch, flip_augment=False),
            runs,
            repeats=1_000_000,
            warm_up=2,
            budget_s=seconds,
            units=size,
        )
        _progress(f"encoder batch {size}: {rates[size].rate:,.0f} faces/s")
    return rates


def differences(
    gpu: FacePipeline, cpu: FacePipeline, images: Sequence[np.ndarray], options: DetectionOptions
) -> dict[str, Any]:
    """The whole pipeline on each photo in both sessions: the largest differences of the boxes and
    embeddings of the faces both found (in the same order), and the photos where the face counts differ."""
    embedding = box = 0.0
    compared = other_counts = 0
    for image in images:
        [on_gpu] = gpu.analyze([image], options)
        [on_cpu] = cpu.analyze([image], options)
        if len(on_gpu) != len(on_cpu):
            other_counts += 1
            continue
        for a, b in zip(on_gpu, on_cpu, strict=True):
            assert a.embedding is not None and b.embedding is not None
            embedding = max(embedding, float(np.abs(a.embedding - b.embedding).max()))
            box = max(box, float(np.abs(a.detection.box - b.detection.box).max()))
            compared += 1
    return {
        "max_abs_diff_vs_cpu": embedding,
        "box_max_abs_diff_vs_cpu_px": box,
        "faces_compared": compared,
        "photos_with_other_face_counts": other_counts,
    }


def encoder_difference(gpu: FacePipeline, cpu: FacePipeline, chips: np.ndarray) -> float:
    """The largest difference of the embeddings of the same chips (no mirror averaging)."""
    return float(np.abs(gpu.encoder.embed(chips) - cpu.encoder.embed(chips)).max())


def _warm(settings: EmbedderSettings, allow_cpu: bool) -> FacePipeline:
    """A pipeline on the CUDA provider, warmed up on every shape it runs on."""
    started = time.perf_counter()
    pipeline = build_pipeline(settings)
    _check_providers(pipeline.encoder.providers_in_use, allow_cpu)
    pipeline.warm_up()
    tf32 = "on" if settings.cuda_tf32 else "off"
    _progress(f"pipeline with TF32 {tf32} warmed up in {time.perf_counter() - started:.0f} s")
    return pipeline


def _models(models_dir: Path, images: Sequence[np.ndarray], plan: GpuPlan, allow_cpu: bool) -> dict[str, Any]:
    """Encoder rates, CUDA against CPU, and the TF32 mode: pipelines whose encoder runs the largest batch."""
    largest = max(plan.encoder_batches)
    settings = _settings(models_dir, True, providers=["CPUExecutionProvider"], encoder_batch=largest)
    cpu = build_pipeline(settings)
    gpu = _warm(_settings(models_dir, allow_cpu, cuda_tf32=False, encoder_batch=largest), allow_cpu)
    options = DetectionOptions.from_settings(settings)
    chips = _chips(cpu, images, options)
    rates = _encoder_rates(gpu, chips, plan.encoder_batches, plan.encoder_seconds)
    found = differences(gpu, cpu, images, options) | {
        "encoder_max_abs_diff_vs_cpu": encoder_difference(gpu, cpu, chips)
    }
    _progress(f"CUDA vs CPU: {found}")
    del gpu
    gc.collect()
    tf32 = _warm(_settings(models_dir, allow_cpu, cuda_tf32=True, encoder_batch=largest), allow_cpu)
    tf32_rate = _encoder_rates(tf32, chips, [largest], plan.encoder_seconds)[largest]
    tf32_error = encoder_difference(tf32, cpu, chips)
    _progress(f"TF32: {tf32_rate.rate:,.0f} faces/s, {tf32_error:.2g} from the CPU")
    return found | {
        "encoder_faces_per_s": rates[largest].rate,
        "encoder_faces_per_s_by_batch": {str(size): timing.rate for size, timing in rates.items()},
        "encoder_timings": {str(size): timing.to_json() for size, timing in rates.items()},
        "chips": len(chips),
        "tf32": {"encoder_faces_per_s": tf32_rate.rate, "max_abs_diff_vs_cpu": tf32_error, "batch": largest},
    }


def _http(models_dir: Path, inputs: Inputs, plan: GpuPlan, log: Path, allow_cpu: bool) -> Throughput:
    """``POST /faces`` batches from concurrent clients to the embedder as ``python -m embedder_service``."""
    batches = _batches(inputs.photos, plan.http_batch)
    # The settings of the in-process runs: EMBEDDER_* of this environment, the providers.
    env = {"EMBEDDER_PROVIDERS": json.dumps(PROVIDERS), "EMBEDDER_REQUIRE_GPU": json.dumps(not allow_cpu)}
    with (
        running_embedder(models_dir, log, env, timeout_s=600) as process,
        # One client for every caller thread (httpx's Client is thread-safe), a connection each.
        httpx.Client(
            base_url=process.url, timeout=120, limits=httpx.Limits(max_connections=plan.http_clients)
        ) as client,
    ):

        def post(batch: list[Upload]) -> None:
            files = [("image", (name, data, "image/jpeg")) for name, data in batch]
            client.post("/faces", files=files, params={"landmarks": "false"}).raise_for_status()

        for seconds in (plan.warm_s, plan.seconds):  # the first round warms up
            throughput = sustained(
                post, batches, threads=plan.http_clients, seconds=seconds, units=plan.http_batch
            )
        return throughput


def _peer(images: Sequence[np.ndarray], plan: GpuPlan) -> dict[str, Any]:
    """facenet-pytorch's MTCNN with the parity reference's settings, on the GPU torch sees, in
    batches of same-size photos (all LFW photos are 250x250); or why it could not run."""
    try:
        torch = importlib.import_module("torch")
        mtcnn = importlib.import_module("facenet_pytorch.models.mtcnn")
    except ImportError as error:
        return {"skipped": f"facenet-pytorch unavailable: {error}"}
    # Imports torch, hence here: the settings our detector reproduces (tests/embedder/test_mtcnn_parity.py).
    from tools.record_mtcnn_reference import SETTINGS

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector = mtcnn.MTCNN(
        keep_all=True,
        device=device,
        post_process=False,
        min_face_size=SETTINGS["min_face_size"],
        thresholds=SETTINGS["thresholds"],
        factor=SETTINGS["factor"],
    )
    shape = images[0].shape
    same_size = [image for image in images if image.shape == shape]
    batches = [np.stack(batch) for batch in _batches(same_size, plan.peer_batch)]
    timing = time_calls(
        lambda batch: detector.detect(batch, landmarks=True),
        batches,
        repeats=1_000_000,
        warm_up=2,
        budget_s=plan.peer_seconds,
        units=plan.peer_batch,
    )
    _progress(f"facenet-pytorch MTCNN on {device}: {timing.rate:,.1f} photos/s")
    return {
        "photos_per_s": timing.rate,
        "device": str(device),
        "batch": plan.peer_batch,
        "photo_size": list(shape[:2]),
        "timing": timing.to_json(),
    }


def measure(
    inputs: Inputs, models_dir: Path, plan: GpuPlan, out: Path, allow_cpu: bool = False
) -> dict[str, Any]:
    """Every figure of the section, the goals and what they were measured on; logs go to ``out``."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(models_dir, allow_cpu)
    max_pixels = settings.max_image_pixels
    service = EmbedderService.from_models(settings)
    providers = service.providers()
    _check_providers(providers, allow_cpu)
    service.warm_up()
    _progress(f"service ready on {providers} in {time.perf_counter() - started:.0f} s")
    try:
        served = _in_process(service, inputs, plan)
    finally:
        service.close()
    del service
    gc.collect()
    images = [decode_image(data, max_pixels) for _, data in inputs.photos]
    models = _models(models_dir, images[: plan.error_photos], plan, allow_cpu)
    http = _http(models_dir, inputs, plan, out / "bench-gpu-embedder.log", allow_cpu)
    _progress(f"http: {http.rate:,.1f} photos/s")
    try:
        peer = _peer(images, plan)
    except Exception as error:  # the baseline alone; the run on a lent GPU is not to be lost over it
        peer = {"skipped": f"facenet-pytorch failed: {error!r}"}
    figures: dict[str, Any] = {
        "pipeline_photos_per_s": served["pipeline"].rate,
        "pipeline_bulk_photos_per_s": served["pipeline_bulk"].rate,
        "http_photos_per_s": http.rate,
        "frames_720p_per_s": served["frames_720p"].rate,
        "peer_photos_per_s": peer.get("photos_per_s"),
    }
    figures["speedup_vs_peer"] = speedup(figures["pipeline_photos_per_s"], figures["peer_photos_per_s"])
    figures |= models
    goals = check_goals(figures)
    return {
        **_provenance(),
        "providers": providers,
        "plan": dataclasses.asdict(plan),
        **figures,
        "runs": {name: run.to_json() for name, run in served.items()} | {"http": http.to_json()},
        "peer": peer,
        "goals": goals,
        "all_goals_met": all(goal["met"] for goal in goals.values()),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _commit() -> str | None:
    """FACESEARCH_COMMIT (tools/gpu/run.sh: the GPU machine gets no .git), else git's answer."""
    if os.environ.get("FACESEARCH_COMMIT"):
        return os.environ["FACESEARCH_COMMIT"]
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return None if commit is None else commit + ("+uncommitted" if dirty else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _provenance() -> dict[str, Any]:
    """Device, versions, date and commit. torch is asked last: it is imported by the peer anyway."""
    info = importlib.import_module("onnxruntime.capi.build_and_package_info")
    versions: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_package": getattr(info, "package_name", None),
        # Present in the GPU builds only: the CUDA and cuDNN ONNX Runtime was built against.
        "onnxruntime_cuda": getattr(info, "cuda_version", None),
        "onnxruntime_cudnn": getattr(info, "cudnn_version", None),
        "facenet_pytorch": _version("facenet-pytorch"),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    device: dict[str, Any] = {
        "nvidia_smi": _command_output(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        )
    }
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        versions["torch"] = None
    else:
        versions |= {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "torch_cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        }
        device["torch"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "device": device,
        "versions": versions,
    }


def _number(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def rows(report: Mapping[str, Any]) -> list[Row]:
    """The table rows of a report: one per goal, then the encoder by batch size and the TF32 mode."""
    units = {
        "pipeline_photos_per_s": ("whole pipeline in process, one photo per call", "photos/s"),
        "http_photos_per_s": (f"POST /faces, {report['plan']['http_batch']} photos per request", "photos/s"),
        "frames_720p_per_s": ("1280x720 frames, as the video ingest sends them", "frames/s"),
        "encoder_faces_per_s": (f"encoder, batch {max(report['plan']['encoder_batches'])}", "faces/s"),
        "max_abs_diff_vs_cpu": ("max abs difference of embeddings from the CPU", ""),
        "speedup_vs_peer": ("in process vs facenet-pytorch MTCNN (detection only)", "x"),
    }
    notes = {
        "pipeline_photos_per_s": f"bulk calls of {report['plan']['bulk']}:"
        f" {report['pipeline_bulk_photos_per_s']:,.0f} photos/s",
        "max_abs_diff_vs_cpu": f"boxes {report['box_max_abs_diff_vs_cpu_px']:.2g} px,"
        f" encoder alone {report['encoder_max_abs_diff_vs_cpu']:.2g};"
        f" {report['photos_with_other_face_counts']} photo(s) with other face counts",
        "speedup_vs_peer": report["peer"].get(
            "skipped", f"peer: {_number(report['peer_photos_per_s'], 'photos/s')}"
        ),
    }
    table = [
        Row(
            "gpu",
            units[key][0],
            goal["value"],
            units[key][1],
            goal=goal["goal"],
            met=goal["met"],
            notes=notes.get(key, ""),
        )
        for key, goal in report["goals"].items()
    ]
    table.append(
        Row(
            "gpu",
            "encoder faces/s by batch size",
            None,
            "",
            notes=", ".join(
                f"{size}: {rate:,.0f}" for size, rate in report["encoder_faces_per_s_by_batch"].items()
            ),
        )
    )
    tf32 = report["tf32"]
    table.append(
        Row(
            "gpu",
            f"encoder with EMBEDDER_CUDA_TF32=true, batch {tf32['batch']}",
            tf32["encoder_faces_per_s"],
            "faces/s",
            notes=f"max abs difference from the CPU {tf32['max_abs_diff_vs_cpu']:.2g}",
        )
    )
    return table


def section(
    lfw_dir: Path,
    data_dir: Path,
    out: Path,
    plan: GpuPlan,
    frames_dir: Path | None = None,
    allow_cpu: bool = False,
) -> Section:
    """The section for ``python -m tools.bench``; writes ``out/bench-gpu.json`` unless skipped."""
    reason = None if allow_cpu else skip_reason()
    if reason is not None:
        _progress(f"skipped: {reason}")
        return Section(rows=[skipped_row("gpu", "GPU section (bench-gpu.json)", reason)])
    report = measure(
        read_inputs(lfw_dir, frames_dir, data_dir, plan), EmbedderSettings().models_dir, plan, out, allow_cpu
    )
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    _progress(
        f"wrote {out / REPORT} in {report['elapsed_s']:.0f} s; all goals met: {report['all_goals_met']}"
    )
    summary = {
        key: f"{goal['value']:.4g}" for key, goal in report["goals"].items() if goal["value"] is not None
    }
    return Section(rows=rows(report), summary=summary, details={"gpu": {"report": str(out / REPORT)}})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    parser.add_argument("--lfw-dir", type=Path, help="LFW-layout photo folder (default: DATA/lfw_dev)")
    parser.add_argument("--frames-dir", type=Path, help="1280x720 JPEG frames (default: sampled from DATA)")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes on an H100)")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="measure without the CUDA provider too (tests: CPU figures)"
    )
    for item in dataclasses.fields(GpuPlan):
        flag = "--" + item.name.replace("_", "-")
        default = getattr(GpuPlan(), item.name)
        kind = int if isinstance(default, tuple) else type(default)
        parser.add_argument(
            flag, type=kind, nargs="+" if isinstance(default, tuple) else None, help=item.metadata["help"]
        )
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> GpuPlan:
    """The mode's plan with the sizes given on the command line."""
    given = {item.name: getattr(args, item.name) for item in dataclasses.fields(GpuPlan)}
    chosen: dict[str, Any] = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in given.items()
        if value is not None
    }
    return dataclasses.replace(QUICK_PLAN if args.quick else GpuPlan(), **chosen)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json_output=False)
    result = section(
        args.lfw_dir or args.data / "lfw_dev",
        args.data,
        args.out,
        plan_of(args),
        args.frames_dir,
        args.allow_cpu,
    )
    print(markdown(result.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
