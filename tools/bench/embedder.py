"""Embedder speed: MTCNN, the embedding model by batch size, the whole photo pipeline; and the
same work done by the reference implementations, in the same run on the same inputs.

Baselines: dlib's own ``compute_face_descriptor`` on our aligned chips (the network we export to
ONNX, so the work is identical), the ``face_recognition`` pipeline per photo (dlib HOG detector,
dlib landmarks and chip, the same descriptor), and facenet-pytorch's MTCNN, run in the reference
venv because it pins torch<2.3.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from embedder_service.build.dlib_resnet import locate_dlib_weights
from embedder_service.imaging import decode_image
from embedder_service.models.pipeline import DetectionOptions, FacePipeline
from embedder_service.service import build_pipeline
from embedder_service.settings import EmbedderSettings
from search_service.video.decoder import sample_frames
from tools.bench.paths import REFERENCE_PYTHON, REPO_ROOT
from tools.bench.report import Comparison, Curve, Plot, Section, latency_row, number, rate_row
from tools.bench.timing import Timing, evenly_spaced, time_calls
from tools.eval.embedding import centre_face
from tools.eval.pairs import lfw_gallery
from tools.eval.peer import PeerPipeline

BATCHES = (1, 8, 32)
FRAME_SIZE = (1280, 720)
CROWD_CLIP = "videos/crowd_royal_opera_house.mp4"  # 1920x1080, 4-8 faces per frame
PIPELINE_GOAL = 20.0  # photos/s
DLIB_GOAL = 20.0  # times faster than dlib's descriptor


@dataclass(frozen=True)
class EmbedderPlan:
    photos: int  # LFW photos timed through MTCNN and through the whole pipeline
    frames: int  # 1280x720 video frames timed through MTCNN
    frame_rounds: int
    batch_faces: int  # faces embedded per batch size (ours), in batches of that size
    dlib_budget_s: float  # per batch size: dlib takes ~0.2 s per face
    peer_photos: int  # photos through face_recognition (~0.3 s each)
    reference_photos: int  # photos and frames through facenet-pytorch's MTCNN (~0.4 s / 2 s each)
    reference_frames: int


def video_frames(clip: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over the clip, scaled to 1280x720 by the video ingest's own sampler."""
    frames = [frame.image_rgb for frame in sample_frames(clip, sample_fps=8.0, max_side=FRAME_SIZE[0])]
    picked = evenly_spaced(frames, count)
    # The sampler keeps the aspect ratio; a clip that is not 16:9 is brought to exactly 1280x720.
    return [
        f if f.shape[1::-1] == FRAME_SIZE else cv2.resize(f, FRAME_SIZE, interpolation=cv2.INTER_AREA)
        for f in picked
    ]


def _chips(
    pipeline: FacePipeline, images: Sequence[np.ndarray], options: DetectionOptions, count: int
) -> np.ndarray:
    """Aligned chips of real faces (each photo's centre face), cycled up to ``count``."""
    chips = []
    for image in images:
        faces = pipeline.detect(image, options)
        chosen = centre_face([face.box for face in faces], image.shape[0], image.shape[1])
        if chosen is not None:
            chips.append(pipeline.aligner.align(image, faces[chosen].landmarks))
    if not chips:
        raise RuntimeError("no face found in the benchmark photos")
    return np.stack([chips[i % len(chips)] for i in range(count)])


def _batches(chips: np.ndarray, size: int, faces: int) -> list[np.ndarray]:
    """About ``faces`` faces in batches of ``size``, taken in turn from the chips (wrapping around)."""
    rounds = max(1, faces // size)
    return [np.take(chips, range(i * size, (i + 1) * size), axis=0, mode="wrap") for i in range(rounds)]


def _reference_mtcnn(groups: dict[str, list[Path]]) -> dict[str, tuple[Timing, int]] | str:
    """facenet-pytorch's MTCNN per group of images, at its best torch thread count (and that
    count), or why it could not run."""
    if not REFERENCE_PYTHON.exists():
        venv = REFERENCE_PYTHON.relative_to(REPO_ROOT)
        return f"no {venv} with torch (recipe: tools/record_mtcnn_reference.py)"
    paths = [str(path) for group in groups.values() for path in group]
    command = [str(REFERENCE_PYTHON), "-m", "tools.bench.reference_mtcnn", *paths]
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800, check=True
        )
    except subprocess.CalledProcessError as error:
        return f"facenet-pytorch run failed: {error.stderr.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        return "facenet-pytorch run took over 30 minutes"
    by_threads = json.loads(done.stdout)["seconds"]
    best: dict[str, tuple[Timing, int]] = {}
    for name, group in groups.items():
        candidates = [
            (Timing(tuple(s for path in group for s in seconds[str(path)])), int(threads))
            for threads, seconds in by_threads.items()
        ]
        best[name] = min(candidates, key=lambda candidate: candidate[0].median_ms)
    return best


def _dlib_descriptor() -> Callable[[list[np.ndarray]], object] | str:
    """dlib's batch ``compute_face_descriptor`` over 150x150 chips, or why it is unavailable."""
    try:
        dlib = importlib.import_module("dlib")
        model = dlib.face_recognition_model_v1(str(locate_dlib_weights()))
    except (ImportError, FileNotFoundError) as error:
        return f"{error} (pip install dlib-bin)"
    return cast(Callable[[list[np.ndarray]], object], model.compute_face_descriptor)


def _mtcnn(
    pipeline: FacePipeline,
    options: DetectionOptions,
    photos: list[Path],
    images: list[np.ndarray],
    frames: list[np.ndarray],
    plan: EmbedderPlan,
) -> Section:
    out = Section()
    detect = functools.partial(pipeline.detect, options=options)
    ours = {
        "250x250": time_calls(detect, images, warm_up=2),
        "1280x720": time_calls(detect, frames, repeats=plan.frame_rounds),
    }
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as directory:
        # PNG: the reference reads the very pixels our detector saw.
        frame_files = [
            Path(directory) / f"frame{i}.png" for i in range(min(plan.reference_frames, len(frames)))
        ]
        for path, frame in zip(frame_files, frames, strict=False):
            cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        reference = _reference_mtcnn({"250x250": photos[: plan.reference_photos], "1280x720": frame_files})
    for resolution, timing in ours.items():
        what = "LFW photo" if resolution == "250x250" else "video frame, 4-8 faces"
        row = latency_row("embedder", f"MTCNN {resolution} ({what})", timing)
        if isinstance(reference, str):
            row.notes = f"facenet-pytorch skipped: {reference}"
        else:
            base, threads = reference[resolution]
            # Against ours on the same inputs: the reference times only the first few (it is slow).
            count = len(base.seconds)
            same = Timing(timing.seconds[:count])
            row.comparisons.append(
                Comparison(
                    f"facenet-pytorch MTCNN, {threads} torch thread{'s' if threads > 1 else ''}",
                    f"{number(base.median_ms)} ms vs our {number(same.median_ms)} ms on the first {count}",
                    base.median_ms / same.median_ms,
                )
            )
            out.summary[f"facenet_mtcnn_{resolution}_ms"] = f"{base.median_ms:.1f}"
        out.rows.append(row)
        out.summary[f"mtcnn_{resolution}_ms"] = f"{timing.median_ms:.1f}"
    out.details["mtcnn"] = {
        "ours": {resolution: timing.to_json() for resolution, timing in ours.items()},
        "facenet_pytorch": reference
        if isinstance(reference, str)
        else {size: {**t.to_json(), "torch_threads": n} for size, (t, n) in reference.items()},
    }
    return out


def _embedding(pipeline: FacePipeline, chips: np.ndarray, plan: EmbedderPlan) -> Section:
    out = Section()
    descriptor = _dlib_descriptor()
    ours: dict[int, Timing] = {}
    mirrored: dict[int, Timing] = {}
    dlib_timings: dict[int, Timing] = {}
    plain = functools.partial(pipeline.encoder.embed, flip_augment=False)
    with_mirror = functools.partial(pipeline.encoder.embed, flip_augment=True)
    for size in BATCHES:
        batches = _batches(chips, size, plan.batch_faces)
        ours[size] = time_calls(plain, batches, units=size, warm_up=2)
        mirrored[size] = time_calls(with_mirror, batches, units=size, warm_up=1)
        if not isinstance(descriptor, str):
            dlib_timings[size] = time_calls(
                lambda batch: descriptor(list(batch)),
                batches,
                units=size,
                warm_up=1,
                budget_s=plan.dlib_budget_s,
            )
    for size in BATCHES:
        row = rate_row(
            "embedder",
            f"embedding, batch {size}",
            ours[size],
            "faces/s",
            notes=f"with mirror averaging (as served): {number(mirrored[size].rate)} faces/s",
        )
        if size in dlib_timings:
            base = dlib_timings[size]
            speedup = ours[size].rate / base.rate
            row.comparisons.append(
                Comparison("dlib compute_face_descriptor", f"{number(base.rate)} faces/s", speedup)
            )
            row.goal, row.met = f"≥ {DLIB_GOAL:.0f}x dlib", speedup >= DLIB_GOAL
            out.summary[f"embed_b{size}_speedup_vs_dlib"] = f"{speedup:.1f}"
        else:
            row.notes += f"; dlib skipped: {descriptor}"
        out.rows.append(row)
        out.summary[f"embed_b{size}_faces_per_s"] = f"{ours[size].rate:.1f}"
    batch_sizes = [float(b) for b in BATCHES]
    curves = [
        Curve("ours (ONNX Runtime)", batch_sizes, [ours[b].rate for b in BATCHES]),
        Curve("ours + mirror (as served)", batch_sizes, [mirrored[b].rate for b in BATCHES]),
    ]
    if dlib_timings:
        curves.append(
            Curve("dlib compute_face_descriptor", batch_sizes, [t.rate for t in dlib_timings.values()])
        )
    out.plots.append(
        Plot(
            "bench_embedding_throughput.png",
            "Embedding throughput vs batch size",
            "faces per batch",
            "faces/s",
            curves,
            log_x=True,
            log_y=True,
            x_ticks=batch_sizes,
        )
    )
    out.details["embedding"] = {
        "ours": {str(b): ours[b].to_json() for b in BATCHES},
        "ours_mirrored": {str(b): mirrored[b].to_json() for b in BATCHES},
        "dlib": {str(b): t.to_json() for b, t in dlib_timings.items()} or descriptor,
    }
    return out


def _whole_pipeline(
    pipeline: FacePipeline, options: DetectionOptions, photos: list[Path], plan: EmbedderPlan, max_pixels: int
) -> Section:
    out = Section()

    def whole_photo(path: Path) -> None:
        image = decode_image(path.read_bytes(), max_pixels)
        pipeline.analyze([image], options)

    full = time_calls(whole_photo, photos, warm_up=2)
    row = rate_row(
        "embedder", "whole pipeline, LFW photo (read, decode, detect, align, embed)", full, "photos/s"
    )
    row.goal, row.met = f"≥ {PIPELINE_GOAL:.0f}/s", full.rate >= PIPELINE_GOAL
    peer = PeerPipeline.load()
    if isinstance(peer, str):
        row.notes = f"face_recognition skipped: {peer}"
    else:
        base = time_calls(lambda path: peer.embed(path, peer.names), photos[: plan.peer_photos], warm_up=1)
        same = Timing(full.seconds[: len(base.seconds)])
        row.comparisons.append(
            Comparison(
                "face_recognition",
                f"{number(base.rate)} photos/s vs our {number(same.rate)} on the first {len(base.seconds)}",
                same.rate / base.rate,
            )
        )
        out.summary["face_recognition_photos_per_s"] = f"{base.rate:.2f}"
    out.rows.append(row)
    out.summary["pipeline_photos_per_s"] = f"{full.rate:.1f}"
    out.details["pipeline"] = full.to_json()
    return out


def measure(lfw_dir: Path, data_dir: Path, plan: EmbedderPlan, settings: EmbedderSettings) -> Section:
    pipeline = build_pipeline(settings)
    options = DetectionOptions.from_settings(settings)
    photos = evenly_spaced([lfw_dir / path for path, _ in lfw_gallery(lfw_dir)], plan.photos)
    images = [decode_image(path.read_bytes(), settings.max_image_pixels) for path in photos]
    out = _mtcnn(pipeline, options, photos, images, video_frames(data_dir / CROWD_CLIP, plan.frames), plan)
    out.extend(_embedding(pipeline, _chips(pipeline, images, options, BATCHES[-1]), plan))
    out.extend(_whole_pipeline(pipeline, options, photos, plan, settings.max_image_pixels))
    out.details = {
        "embedder": out.details
        | {"settings": settings.model_dump(include={"alignment", "flip_augment", "min_face_size"})}
    }
    return out
