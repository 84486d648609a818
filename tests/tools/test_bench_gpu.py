"""The GPU section of ``make bench``: skipped with one line without a CUDA provider; with ``--allow-cpu``
its measuring code runs end to end on the CPU at tiny sizes; the goals and the fixed-time runs are right."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tools.bench import __main__ as bench
from tools.bench import gpu

REQUIRED = (
    "pipeline_photos_per_s",
    "http_photos_per_s",
    "frames_720p_per_s",
    "encoder_faces_per_s",
    "max_abs_diff_vs_cpu",
    "peer_photos_per_s",
)
GOAL_KEYS = {
    "pipeline_photos_per_s",
    "http_photos_per_s",
    "frames_720p_per_s",
    "encoder_faces_per_s",
    "max_abs_diff_vs_cpu",
    "speedup_vs_peer",
}
AT_GOAL = {
    "pipeline_photos_per_s": 1_500.0,
    "http_photos_per_s": 1_000.0,
    "frames_720p_per_s": 300.0,
    "encoder_faces_per_s": 20_000.0,
    "max_abs_diff_vs_cpu": 1e-4,
    "speedup_vs_peer": 10.0,
}


def test_every_goal_is_met_exactly_at_its_bound() -> None:
    goals = gpu.check_goals(AT_GOAL)
    assert set(goals) == GOAL_KEYS
    assert all(goal["met"] is True for goal in goals.values())
    assert goals["max_abs_diff_vs_cpu"]["value"] == 1e-4


@pytest.mark.parametrize("key", sorted(GOAL_KEYS))
def test_a_figure_on_the_wrong_side_of_its_bound_misses_only_its_goal(key: str) -> None:
    worse = AT_GOAL[key] * (1.01 if key == "max_abs_diff_vs_cpu" else 0.99)
    goals = gpu.check_goals(AT_GOAL | {key: worse})
    assert {name for name, goal in goals.items() if not goal["met"]} == {key}


def test_a_figure_not_measured_leaves_its_goal_undecided() -> None:
    goals = gpu.check_goals({key: value for key, value in AT_GOAL.items() if key != "speedup_vs_peer"})
    assert goals["speedup_vs_peer"] == {"goal": goals["speedup_vs_peer"]["goal"], "value": None, "met": None}


def test_speedup_over_the_peer() -> None:
    assert gpu.speedup(1_500.0, 100.0) == 15.0
    assert gpu.speedup(1_500.0, None) is None
    assert gpu.speedup(None, 100.0) is None


def test_sustained_counts_every_call_that_started_before_the_deadline() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def call(item: int) -> None:
        time.sleep(0.02)
        with lock:
            seen.append(item)

    run = gpu.sustained(call, [1, 2, 3], threads=4, seconds=0.2, units=5)
    assert run.calls == len(seen) >= 4  # every caller ran at least once
    assert run.units == 5 * run.calls
    assert run.seconds >= 0.2
    assert run.rate == pytest.approx(run.units / run.seconds)
    # The items are taken in turn, so each was used about as often as the others.
    assert max(seen.count(i) for i in (1, 2, 3)) - min(seen.count(i) for i in (1, 2, 3)) <= 1


def test_sustained_raises_the_first_error() -> None:
    def call(item: int) -> None:
        raise ValueError(f"bad item {item}")

    with pytest.raises(ValueError, match="bad item"):
        gpu.sustained(call, [7], threads=2, seconds=0.1, units=1)


@pytest.mark.skipif(gpu.skip_reason() is None, reason="ONNX Runtime offers a CUDA provider here")
def test_make_bench_skips_the_section_with_one_line_without_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--sections", "gpu", "--out", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gpu:")]
    assert lines == [f"gpu: skipped: {gpu.skip_reason()}"]
    assert "offers no CUDAExecutionProvider" in lines[0]
    [row] = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert row["component"] == "gpu" and row["value"] is None and row["notes"].startswith("skipped: ")
    assert not (tmp_path / gpu.REPORT).exists()


def test_allow_cpu_measures_everything_and_writes_the_report(
    shared_data: Path, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = "--photos 4 --frames 2 --seconds 0.4 --warm-s 0.1 --threads 2 --bulk 2 --http-clients 2"
    tiny += " --http-batch 2 --frame-batch 2 --encoder-batches 1 4 --encoder-seconds 0.2 --error-photos 3"
    tiny += " --peer-batch 2 --peer-seconds 0.3"
    args = ["--allow-cpu", "--data", str(shared_data), "--out", str(tmp_path), *tiny.split()]
    assert gpu.main(args) == 0

    report = json.loads((tmp_path / gpu.REPORT).read_text())
    for key in REQUIRED:
        assert key in report
    for key in REQUIRED[:4]:
        assert report[key] > 0
    assert report["providers"] == ["CPUExecutionProvider"]
    # The "CUDA" and CPU sessions are both CPU sessions here: the same numbers.
    assert report["max_abs_diff_vs_cpu"] == pytest.approx(0, abs=1e-6)
    assert report["encoder_max_abs_diff_vs_cpu"] == pytest.approx(0, abs=1e-6)
    assert report["faces_compared"] >= 3 and report["photos_with_other_face_counts"] == 0
    assert set(report["encoder_faces_per_s_by_batch"]) == {"1", "4"}
    assert report["encoder_faces_per_s"] == report["encoder_faces_per_s_by_batch"]["4"]
    assert report["tf32"]["encoder_faces_per_s"] > 0
    # No torchvision in the test environment: facenet-pytorch is skipped, with the reason.
    if report["peer_photos_per_s"] is None:
        assert "facenet-pytorch unavailable" in report["peer"]["skipped"]
    assert report["goals"] == gpu.check_goals(report)
    assert report["all_goals_met"] is False  # no CPU reaches the GPU goals
    assert report["versions"]["onnxruntime"] and report["date"] and report["commit"]
    assert report["plan"]["threads"] == 2
    assert "| gpu | encoder faces/s by batch size |" in capsys.readouterr().out
