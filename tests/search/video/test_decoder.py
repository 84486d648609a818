"""Probing and sampling: the real clips, synthetic clips with known timing, and broken inputs."""

from __future__ import annotations

import csv
import itertools
import math
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from search_service.video import VideoDecodeError, probe, sample_frames
from tests.search.video.conftest import CLIP_FPS, CLIP_SIZE


def _real_clips(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "videos" / "VIDEOS.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.shared_data
def test_real_clips_probe_and_sample(shared_data: Path) -> None:
    rows = _real_clips(shared_data)
    assert len(rows) == 5
    for row in rows:
        path = shared_data / "videos" / row["file"]
        info = probe(path)
        width, height = (int(v) for v in row["resolution"].split("x"))
        assert (info.width, info.height, info.rotation) == (width, height, 0), row["file"]
        assert info.fps == pytest.approx(float(row["fps"]), rel=1e-3)
        assert info.frame_count == int(row["frames"])
        assert info.duration == pytest.approx(float(row["duration_s"]), abs=0.06)
        assert info.codec == "h264"

        rate = 2.0
        frames = list(sample_frames(path, rate, max_side=640))
        # A fixed grid from the first frame: about duration x rate samples (the Hamilton clip's video
        # starts 0.85 s into the container, so allow for the first frame's time too).
        expected = (info.duration - frames[0].t_seconds) * rate
        assert abs(len(frames) - expected) <= 1.5, (row["file"], len(frames), expected)
        assert [f.index for f in frames] == list(range(len(frames)))
        times = [f.t_seconds for f in frames]
        assert times == sorted(set(times))
        assert times[0] >= 0 and times[-1] <= info.duration
        image = frames[0].image_rgb
        assert image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert max(image.shape[:2]) == min(640, max(width, height))
        assert image.shape[1] / image.shape[0] == pytest.approx(width / height, rel=0.01)


@pytest.mark.shared_data
def test_timestamps_follow_the_container_clock(shared_data: Path) -> None:
    # Its video stream starts 0.85 s after the container (audio first); a player shows it there.
    frames = list(sample_frames(shared_data / "videos" / "hamilton_short_clip.mp4", 1.0))
    assert frames[0].t_seconds == pytest.approx(0.844, abs=0.01)
    assert all(
        b.t_seconds - a.t_seconds == pytest.approx(1.0, abs=0.05) for a, b in itertools.pairwise(frames)
    )


def test_sampling_grid_on_a_known_clip(a_b_a_clip: Path) -> None:
    info = probe(a_b_a_clip)
    assert (info.width, info.height) == CLIP_SIZE
    assert (info.fps, info.frame_count, info.duration) == (CLIP_FPS, 60, pytest.approx(6.0))
    assert info.codec == "mpeg4"

    times = [f.t_seconds for f in sample_frames(a_b_a_clip, 2.0)]
    assert times == pytest.approx([i * 0.5 for i in range(12)])
    # Asking for more than the source has yields every frame once.
    assert len(list(sample_frames(a_b_a_clip, 25.0))) == 60
    assert len(list(sample_frames(a_b_a_clip, 0.25))) == 2


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_sample_rate_must_be_positive(a_b_a_clip: Path, rate: float) -> None:
    with pytest.raises(ValueError, match="sample_fps"):
        next(sample_frames(a_b_a_clip, rate))


def _write_h264(
    path: Path,
    frames: list[np.ndarray],
    fps: int,
    *,
    container_format: str | None = None,
    options: dict[str, str] | None = None,
    rotation: int | None = None,
) -> Path:
    """H.264 through PyAV's bundled libx264 (OpenCV's wheel cannot encode it)."""
    with av.open(str(path), "w", format=container_format, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:40, :40] = (255, 0, 0)  # a red block at the top-left of the stored frame
    path = _write_h264(tmp_path / "rotated.mp4", [image] * 5, fps=10, rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (120, 160, 90)
    shown = next(sample_frames(path)).image_rgb
    assert shown.shape == (160, 120, 3)
    # Turned a quarter counter-clockwise, as a player shows it: the block is now bottom-left.
    assert shown[140, 20, 0] > 200 and shown[20, 20, 0] < 50


def test_stream_without_timestamps_uses_its_frame_rate(tmp_path: Path) -> None:
    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(25)]
    path = _write_h264(tmp_path / "raw.h264", frames, fps=25, container_format="h264")
    info = probe(path)
    assert info.fps == 25 and info.duration == 0.0
    assert [f.t_seconds for f in sample_frames(path, 5.0)] == pytest.approx([i * 0.2 for i in range(5)])


def _wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(8000, np.int16).tobytes())
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, clip: (d / "empty.mp4").write_bytes(b""), "empty"),
        (
            lambda d, clip: (d / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(50_000)),
            "not a readable",
        ),
        (lambda d, clip: _wav(d / "speech.wav"), "no video stream .*audio"),
        # OpenCV writes the index (moov) last: a cut-off upload has none.
        (
            lambda d, clip: (d / "cut.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2]),
            "not a readable",
        ),
    ],
    ids=["empty", "random-bytes", "audio-only-wav", "truncated-mp4"],
)
def test_undecodable_files_fail_clearly(
    tmp_path: Path, a_b_a_clip: Path, make: Callable[[Path, Path], object], message: str
) -> None:
    make(tmp_path, a_b_a_clip)
    (path,) = tmp_path.iterdir()
    with pytest.raises(VideoDecodeError, match=message):
        probe(path)
    with pytest.raises(VideoDecodeError, match=message):
        next(sample_frames(path))


@pytest.mark.shared_data
def test_a_still_image_is_not_a_video(shared_data: Path) -> None:
    with pytest.raises(VideoDecodeError, match="still image"):
        probe(shared_data / "lfw_dev" / "Colin_Powell" / "Colin_Powell_0038.jpg")


def test_damage_after_the_header_fails_while_sampling(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(40)]
    # faststart puts the index first, so the cut file opens and fails part-way through.
    whole = _write_h264(tmp_path / "whole.mp4", frames, fps=10, options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert probe(cut).frame_count == 40
    with pytest.raises(VideoDecodeError, match="decoding failed after"):
        list(sample_frames(cut, 10.0))


def test_missing_file_is_not_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "absent.mp4")
