"""Copies what ``python -m tools.bench.gpu`` reads into a folder that travels to the GPU machine,
which has neither ``../shared/data`` nor PyAV:

    python -m tools.gpu.stage_inputs --out .gpu-b/inputs [--photos 1000] [--frames 8]

``OUT/lfw/``: LFW photos spread over the folder (many people, the same ones every time), in LFW's
layout. ``OUT/frames/``: 1280x720 frames of the crowd clip, sampled by the bench's own frame helper
and JPEG-encoded as the video ingest sends them to the embedder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from search_service.settings import VideoSettings
from search_service.video.jpeg import encode_jpeg
from tools.bench.embedder import CROWD_CLIP, video_frames
from tools.bench.paths import default_data
from tools.bench.timing import evenly_spaced
from tools.eval.pairs import lfw_gallery


def stage_photos(lfw_dir: Path, out: Path, count: int) -> None:
    for relative, _ in evenly_spaced(lfw_gallery(lfw_dir), count):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw_dir / relative, target)


def encoded_frames(data_dir: Path, count: int) -> list[bytes]:
    """``count`` frames of the crowd clip, JPEG-encoded at the video ingest's quality (needs PyAV)."""
    quality = VideoSettings().jpeg_quality
    return [encode_jpeg(frame, quality) for frame in video_frames(data_dir / CROWD_CLIP, count)]


def stage_frames(data_dir: Path, out: Path, count: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for number, jpeg in enumerate(encoded_frames(data_dir, count)):
        (out / f"frame{number:03d}.jpg").write_bytes(jpeg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    stage_photos(args.data / "lfw_dev", args.out / "lfw", args.photos)
    stage_frames(args.data, args.out / "frames", args.frames)
    print(f"staged {args.photos} LFW photos and {args.frames} frames in {args.out}")


if __name__ == "__main__":
    main()
