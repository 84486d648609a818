"""Video ingest speed: seconds of video processed per wall second, and where the time goes.

The measurement itself is the video pipeline's own (``tools/bench_video.py``: a job's path minus
the store, against a live embedder); this module runs it on real clips at 640x360 and 1280x720 and
puts the numbers in the table. The 720p clips are re-encoded once from the real ones and cached.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from search_service.settings import EmbedderClientSettings, SearchSettings
from tools.bench.report import Row, Section, number, skipped_row
from tools.bench.services import running_embedder
from tools.bench.timing import Timing

if TYPE_CHECKING:
    from tools.bench_video import VideoBench

GOAL = 2.0  # seconds of video per wall second, at 720p


@dataclass(frozen=True)
class Clip:
    source: str  # under the shared data folder
    size: tuple[int, int] | None  # re-encoded to this size; None: as it is
    label: str
    key: str  # in the key=value line


CLIPS = (
    Clip("videos/hamilton_short_clip.mp4", None, "Hamilton clip 640x360 (1-3 faces)", "hamilton_360p"),
    Clip(
        "videos/hamilton_short_clip.mp4",
        (1280, 720),
        "Hamilton clip at 1280x720 (1-3 faces)",
        "hamilton_720p",
    ),
    Clip(
        "videos/crowd_royal_opera_house.mp4", (1280, 720), "crowd clip at 1280x720 (4-8 faces)", "crowd_720p"
    ),
)


@dataclass(frozen=True)
class VideoPlan:
    rounds: int  # analyses per clip; the median is reported


def _clip_file(
    clip: Clip, data_dir: Path, cache_dir: Path, rescale: Callable[[Path, Path, int, int], Path]
) -> Path:
    source = data_dir / clip.source
    if clip.size is None:
        return source
    width, height = clip.size
    target = cache_dir / "videos" / f"{source.stem}_{width}x{height}.mp4"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so an interrupted encode never leaves a truncated clip cached.
        partial = target.with_name("partial-" + target.name)
        rescale(source, partial, width, height)
        partial.replace(target)
    return target


def _row(clip: Clip, runs: list[VideoBench]) -> Row:
    # Every run processed the same seconds of video: as a rate, the median run is the median speed.
    timing = Timing(tuple(run.wall_s for run in runs), units=runs[0].duration_s)
    typical = min(runs, key=lambda run: abs(run.wall_s - timing.quantile(0.5)))
    row = Row(
        "video",
        f"video ingest, {clip.label}",
        timing.rate,
        "x real time",
        "runs " + ", ".join(number(run.speed) for run in runs),
        notes=(
            f"{typical.duration_s:.1f} s of video in {typical.wall_s:.2f} s: decode {typical.decode_s:.2f}, "
            f"detect+embed {typical.detect_embed_s:.2f}, tracking {typical.tracking_s:.2f} s; "
            f"{typical.frames_sampled} frames at {typical.sample_fps:g}/s, {typical.faces} faces, "
            f"{typical.people} people"
        ),
    )
    if clip.size == (1280, 720):
        row.goal, row.met = f"≥ {GOAL:.0f}x real time", timing.rate >= GOAL
    return row


def measure(data_dir: Path, models_dir: Path, cache_dir: Path, plan: VideoPlan) -> Section:
    try:
        from tools.bench_video import bench_clip, rescale_clip
    except ImportError as error:  # the video path is optional in a checkout without it
        return Section(rows=[skipped_row("video", "video ingest speed", f"tools/bench_video.py: {error}")])
    runs: dict[str, list[VideoBench]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-video-") as scratch,
        running_embedder(models_dir, Path(scratch) / "embedder.log") as embedder,
    ):
        settings = SearchSettings(embedder=EmbedderClientSettings(url=embedder.url))
        for clip in CLIPS:
            path = _clip_file(clip, data_dir, cache_dir, rescale_clip)
            runs[clip.label] = [bench_clip(path, settings) for _ in range(plan.rounds)]
    out = Section(rows=[_row(clip, runs[clip.label]) for clip in CLIPS])
    out.details["video"] = {label: [asdict(run) for run in clip_runs] for label, clip_runs in runs.items()}
    for clip, row in zip(CLIPS, out.rows, strict=True):
        out.summary[f"video_{clip.key}_realtime"] = f"{row.value:.2f}"
    return out
