"""Video ingest speed on one clip, through the search service's own video path and a live embedder.

``bench_clip`` runs exactly what a job runs (same settings, frames to the embedder as JPEG over
HTTP, tracking, grouping) minus the store, and returns seconds of video per wall second with the
split between decode, detect + embed (the embedder, including the HTTP round trip) and tracking.
``rescale_clip`` makes a clip of another resolution (H.264) from a real one, for 720p numbers.

    python -m tools.bench_video CLIP... [--embedder-url URL] [--detect-side N] [--sample-fps F]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from search_service.clients.embedder import EmbedderClient
from search_service.services.frames import FrameEmbedder
from search_service.services.videos import analyse_video
from search_service.settings import SearchSettings
from search_service.video import sample_frames


@dataclass(frozen=True)
class VideoBench:
    clip: str
    width: int
    height: int
    duration_s: float
    frames_sampled: int
    faces: int
    people: int
    wall_s: float
    speed: float  # seconds of video per wall second
    decode_s: float
    detect_embed_s: float
    tracking_s: float
    sample_fps: float
    detect_side: int
    max_side: int


def bench_clip(path: Path, settings: SearchSettings) -> VideoBench:
    """Analyse ``path`` once (after one warm-up batch) with the embedder at ``settings.embedder.url``."""
    return asyncio.run(_bench(path, settings))


async def _bench(path: Path, settings: SearchSettings) -> VideoBench:
    video = settings.video
    client = EmbedderClient(settings.embedder)
    try:
        frames = FrameEmbedder(client, asyncio.get_running_loop(), video)
        first = next(iter(sample_frames(path, video.sample_fps, max_side=video.max_side)))
        await asyncio.to_thread(frames, [first.image_rgb])  # model warm-up, not measured
        started = time.perf_counter()
        analysis = await asyncio.to_thread(analyse_video, path, frames, video)
        wall = time.perf_counter() - started
    finally:
        await client.aclose()
    timings = analysis.timings
    return VideoBench(
        clip=path.name,
        width=analysis.width,
        height=analysis.height,
        duration_s=analysis.duration,
        frames_sampled=analysis.frames_sampled,
        faces=analysis.faces_seen,
        people=len(analysis.people),
        wall_s=wall,
        speed=analysis.duration / wall,
        decode_s=timings.decode,
        detect_embed_s=timings.detect_embed,
        tracking_s=timings.tracking,
        sample_fps=video.sample_fps,
        detect_side=video.detect_side,
        max_side=video.max_side,
    )


def rescale_clip(source: Path, target: Path, width: int, height: int) -> Path:
    """Re-encode ``source`` at width x height (H.264, same timestamps), e.g. a 720p test clip."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = reader.streams.video[0]
        encoder = writer.add_stream("libx264", rate=stream.average_rate)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = stream.time_base
        encoder.options = {"crf": "20", "preset": "veryfast"}
        for frame in reader.decode(stream):
            scaled = frame.reformat(width=width, height=height)
            scaled.pts, scaled.time_base = frame.pts, frame.time_base
            for packet in encoder.encode(scaled):
                writer.mux(packet)
        for packet in encoder.encode():
            writer.mux(packet)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--embedder-url", help="default: EMBEDDER_URL or the service default")
    parser.add_argument("--detect-side", type=int, help="override SEARCH_VIDEO_DETECT_SIDE")
    parser.add_argument("--sample-fps", type=float, help="override SEARCH_VIDEO_SAMPLE_FPS")
    args = parser.parse_args(argv)
    settings = SearchSettings()
    embedder = {"url": args.embedder_url} if args.embedder_url else {}
    video = {
        name: value
        for name, value in (("detect_side", args.detect_side), ("sample_fps", args.sample_fps))
        if value is not None
    }
    settings = settings.model_copy(
        update={
            "embedder": settings.embedder.model_copy(update=embedder),
            "video": settings.video.model_copy(update=video),
        }
    )
    print("clip, size, seconds of video per wall second, wall s: decode / detect+embed / tracking")
    for clip in args.clips:
        result = bench_clip(clip, settings)
        print(
            f"{result.clip} {result.width}x{result.height} {result.duration_s:.1f} s: "
            f"{result.speed:.2f}x real time, {result.wall_s:.2f} s = {result.decode_s:.2f} / "
            f"{result.detect_embed_s:.2f} / {result.tracking_s:.2f} "
            f"({result.frames_sampled} frames, {result.faces} faces, {result.people} people)",
            flush=True,
        )
        print(asdict(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
