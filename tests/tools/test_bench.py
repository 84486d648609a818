"""The benchmark's own arithmetic on small hand-made inputs: recall, timings, the synthetic gallery,
the table and the README section it writes."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tools.bench.gallery import SyntheticGallery, hold_out_queries
from tools.bench.load import (
    LoadPlan,
    Memory,
    Outcome,
    Phase,
    large_png,
    rss_mb,
    section,
    summarize,
    verdict,
    vm_rss_mb,
)
from tools.bench.readme import END, EVAL_END, EVAL_START, START, SectionError, main, render, replace_section
from tools.bench.recall import exact_top_k, match_recall, recall_at_k
from tools.bench.report import Comparison, Row, markdown, number, rows_from_json
from tools.bench.timing import Timing, evenly_spaced, time_calls


def test_exact_top_k_orders_by_cosine() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float32)
    positions, scores = exact_top_k(gallery, np.array([[0.8, 0.6]], np.float32), k=3)
    assert positions.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(scores, [[0.96, 0.8, 0.6]], rtol=1e-6)


def test_exact_top_k_caps_k_at_the_gallery_size_and_handles_blocks() -> None:
    gallery = np.eye(3, dtype=np.float32)
    positions, _ = exact_top_k(gallery, gallery, k=20, block=2)
    assert positions.shape == (3, 3)
    assert positions[:, 0].tolist() == [0, 1, 2]


def test_recall_at_k_counts_exact_hits_and_ignores_padding() -> None:
    truth = np.array([[0, 1, 2], [3, 4, 5]])
    found = np.array([[2, 0, 9], [5, -1, -1]])
    assert recall_at_k(truth, found) == pytest.approx(3 / 6)


def test_match_recall_counts_only_hits_above_the_threshold_pooled_over_queries() -> None:
    truth = np.array([[0, 1, 2], [3, 4, 5]])
    scores = np.array([[0.97, 0.92, 0.50], [0.91, 0.40, 0.30]])
    # Query 1 returns one of its two matches and the non-match; query 2 misses its only match.
    found = np.array([[1, 2, 7], [4, 5, 8]])
    assert match_recall(truth, scores, found, threshold=0.90) == pytest.approx(1 / 3)
    assert match_recall(truth, scores, truth, threshold=0.90) == 1.0


def test_match_recall_is_undefined_without_matches() -> None:
    truth = np.array([[0, 1]])
    assert match_recall(truth, np.array([[0.5, 0.4]]), truth, threshold=0.9) is None


def test_hold_out_queries_takes_the_last_photo_of_people_with_two_or_more() -> None:
    identities = ["a", "a", "b", "c", "c", "c", "d", "d"]
    assert hold_out_queries(identities, 10).tolist() == [1, 5, 7]
    assert hold_out_queries(identities, 2).tolist() == [1, 7]


def _clustered(people: int = 40, photos: int = 4, dimension: int = 16, rank: int = 10) -> np.ndarray:
    """Unit vectors around a shared direction in a low-rank subspace, like real face embeddings."""
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((dimension, rank)))[0]
    centres = rng.standard_normal((people, rank)) * np.linspace(1.0, 0.2, rank)
    points = np.repeat(centres, photos, axis=0) + 0.1 * rng.standard_normal((people * photos, rank))
    vectors = 4.0 * np.ones(dimension) / np.sqrt(dimension) + points @ basis.T
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_synthetic_rotations_are_rotations_that_fix_the_mean() -> None:
    gallery = SyntheticGallery(_clustered())
    rotation = gallery.rotation(3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(16), atol=1e-10)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    residuals = gallery.real - gallery.real.mean(axis=0)
    # The top principal component is kept, and each copy has the real set's inner geometry.
    rotated = residuals @ rotation.T
    np.testing.assert_allclose(rotated @ rotated.T, residuals @ residuals.T, atol=1e-5)
    assert not np.allclose(rotated, residuals, atol=1e-3)


def test_synthetic_gallery_rows_are_stable_unit_vectors_starting_with_the_real_ones() -> None:
    real = _clustered()
    gallery = SyntheticGallery(real, seed=7)
    big = gallery.vectors(1000)
    assert big.shape == (1000, 16)
    np.testing.assert_array_equal(big[: len(real)], real)
    np.testing.assert_allclose(np.linalg.norm(big, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(gallery.vectors(400), big[:400])
    np.testing.assert_array_equal(SyntheticGallery(real, seed=7).vectors(1000), big)
    assert SyntheticGallery(real, seed=8).digest != gallery.digest
    # A copy is a new population: its people are not the originals.
    assert float(np.mean(np.sum(gallery.copy(1) * real, axis=1))) < 0.99


def test_timing_summaries() -> None:
    timing = Timing((0.010, 0.020, 0.030, 0.040, 0.050), units=10)
    assert timing.median_ms == pytest.approx(30.0)
    assert timing.p95_ms == pytest.approx(48.0)
    assert timing.rate == pytest.approx(10 / 0.030)
    assert timing.rate_iqr == pytest.approx((10 / 0.040, 10 / 0.020))


def test_time_calls_warms_up_and_stops_at_the_budget() -> None:
    calls: list[int] = []
    timing = time_calls(calls.append, [1, 2, 3], repeats=2, warm_up=1)
    assert calls == [1, 1, 2, 3, 1, 2, 3]
    assert len(timing.seconds) == 6
    assert len(time_calls(calls.append, [1, 2, 3], repeats=100, warm_up=0, budget_s=0.0).seconds) == 1


def test_evenly_spaced_spans_the_sequence() -> None:
    assert evenly_spaced(list(range(10)), 3) == [0, 4, 9]  # 4.5 rounds to even
    assert evenly_spaced([1, 2], 5) == [1, 2]


def test_number_keeps_three_figures_without_exponents() -> None:
    assert [number(v) for v in (12345.6, 123.4, 12.34, 1.234, 0.01234)] == [
        "12,346",
        "123",
        "12.3",
        "1.23",
        "0.0123",
    ]


def _document() -> dict:
    row = Row(
        "index",
        "embedded HNSW @ 1M",
        1.234,
        "ms",
        "p95 2.50",
        [Comparison("exact numpy", "63.0 ms", 51.1)],
        goal="p50 ≤ 2 ms",
        met=True,
        notes="match recall 0.9950",
    )
    return {
        "date": "2030-01-02T03:04:05+00:00",
        "command": "make bench",
        "mode": "full",
        "complete": True,
        "sections": ["index"],
        "elapsed_s": 1800.0,
        "machine": {"cores": 2, "cpu": "Test CPU @ 2.0GHz", "platform": "Linux-x", "python": "3.11.9"},
        "versions": {"onnxruntime": "1.31.1"},
        "rows": [asdict(row)],
    }


def test_rows_survive_the_json_round_trip_into_the_table() -> None:
    table = markdown(rows_from_json(_document()))
    assert (
        "| index | embedded HNSW @ 1M | 1.23 ms | p95 2.50 | 51.1x vs exact numpy (63.0 ms) | p50 ≤ 2 ms ✓ |"
        in table
    )


def test_render_names_machine_date_and_command() -> None:
    body = render(_document())
    assert "2030-01-02" in body and "`make bench`" in body
    assert "2 cores, Test CPU @ 2.0GHz" in body and "onnxruntime 1.31.1" in body
    assert "embedded HNSW @ 1M" in body


def test_replace_section_keeps_everything_outside_the_markers() -> None:
    text = f"# Title\n\nintro\n\n{START}\nold numbers\n{END}\n\n## After\n"
    updated = replace_section(text, "new numbers")
    assert updated == f"# Title\n\nintro\n\n{START}\nnew numbers\n{END}\n\n## After\n"
    assert replace_section(updated, "newer") == f"# Title\n\nintro\n\n{START}\nnewer\n{END}\n\n## After\n"


@pytest.mark.parametrize(
    "text", ["no markers", f"{START} only the start", f"{END} before {START}", f"{START}{END}{START}{END}"]
)
def test_replace_section_rejects_broken_markers(text: str) -> None:
    with pytest.raises(SectionError):
        replace_section(text, "body")


def test_main_rewrites_a_readme_and_refuses_partial_runs(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\n{END}\n")
    results = tmp_path / "bench.json"
    results.write_text(json.dumps(_document()))
    no_eval = ["--eval-json", str(tmp_path / "no-eval.json")]
    assert main(["--json", str(results), "--readme", str(readme), *no_eval]) == 0
    assert "embedded HNSW @ 1M" in readme.read_text()
    assert readme.read_text().startswith(f"intro\n{START}\nMeasured on 2030-01-02")

    results.write_text(json.dumps(_document() | {"mode": "quick", "complete": False}))
    before = readme.read_text()
    assert main(["--json", str(results), "--readme", str(readme), *no_eval]) == 2
    assert readme.read_text() == before
    assert main(["--json", str(results), "--readme", str(readme), "--allow-partial", *no_eval]) == 0


def test_main_also_rewrites_the_accuracy_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n## Accuracy\n{EVAL_START}\nold\n{EVAL_END}\n")
    results = tmp_path / "bench.json"
    results.write_text(json.dumps(_document()))
    evaluation = tmp_path / "eval.json"
    document = {
        "date": "2030-01-03T00:00:00+00:00",
        "command": "python -m tools.eval",
        "protocol": "View 1",
        "gallery": "lfw_dev",
        "limit": None,
        "onnxruntime": "1.0",
        "machine": {"cores": 2, "platform": "Linux", "python": "3.11"},
    }
    evaluation.write_text(json.dumps(document))
    evaluation.with_suffix(".md").write_text("| pipeline | accuracy |\n|---|---|\n| ours | 98.60 |\n")
    assert main(["--json", str(results), "--readme", str(readme), "--eval-json", str(evaluation)]) == 0
    text = readme.read_text()
    assert "Measured on 2030-01-03 with `python -m tools.eval` (View 1" in text
    assert "| ours | 98.60 |" in text and "old" not in text

    evaluation.write_text(json.dumps(document | {"limit": 100}))
    assert main(["--json", str(results), "--readme", str(readme), "--eval-json", str(evaluation)]) == 2


def test_the_milvus_lite_row_sits_beside_the_embedded_ones() -> None:
    from tools.bench.index import NUMPY, MethodResult, milvus_method, section

    def timed(method: str, size: int, median_s: float, build_s: float | None = None) -> MethodResult:
        return MethodResult(method, size, Timing((median_s,) * 3), 1.0, 1.0, build_s)

    results = [
        timed(NUMPY, 10_000, 0.0002),
        timed(milvus_method(), 10_000, 0.007, build_s=1.0),
        MethodResult(milvus_method(), 1_000, skipped="pymilvus and milvus-lite are not installed"),
    ]
    out = section(results, 0.9, {})
    rows = {row.measurement: row for row in out.rows}
    row = rows[f"{milvus_method()} @ 10k"]
    assert row.value == pytest.approx(7.0) and "loaded and indexed in 1.0 s" in row.notes
    assert [c.baseline for c in row.comparisons] == [NUMPY]
    assert rows[f"{milvus_method()} @ 1k"].notes == "skipped: pymilvus and milvus-lite are not installed"
    assert out.summary["milvus_lite_10k_p50_ms"] == "7.000"


def test_milvus_lite_is_skipped_with_a_reason_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.bench import index

    def missing(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(index.importlib, "import_module", missing)
    [(method, search, build_s)] = list(index._milvus_lite(np.eye(4, dtype=np.float32)))
    assert method == index.milvus_method() and build_s is None
    assert search == "pymilvus and milvus-lite are not installed (pip install pymilvus milvus-lite)"


def test_milvus_lite_search_finds_the_nearest() -> None:
    pytest.importorskip("milvus_lite", reason="milvus-lite (in the test extra) is not installed")
    from tools.bench import index

    vectors = _clustered(people=50)
    methods = index._milvus_lite(vectors)  # used one at a time, as measure() does
    _, search, build_s = next(methods)
    assert callable(search) and build_s is not None
    truth, _ = exact_top_k(vectors, vectors[:5], index.K)
    assert recall_at_k(truth, np.stack([search(query) for query in vectors[:5]])) == 1.0
    assert next(methods, None) is None  # closed, its Milvus Lite server stopped, the folder gone


# --- the load section (tools/bench/load.py): judging answers, summaries, memory, the table ---------


def test_verdict_tells_shedding_and_no_face_from_errors() -> None:
    assert verdict(Outcome("search", 200, 0.1)) == "ok"
    assert verdict(Outcome("ingest", 200, 0.1)) == "ok"
    assert verdict(Outcome("search", 503, 0.1, retry_after=True)) == "shed"
    assert verdict(Outcome("search", 503, 0.1)) == "error"  # no Retry-After: not a designed refusal
    assert (
        verdict(Outcome("search", 422, 0.1, detail="no face found in the query photo 'q.jpg'")) == "no face"
    )
    assert verdict(Outcome("ingest", 422, 0.1, detail="no face found")) == "error"
    assert verdict(Outcome("search", 500, 0.1)) == "error"
    assert verdict(Outcome("search", None, 120.0, detail="ReadTimeout: timed out")) == "error"
    # A huge photo may be refused over the pixel budget, or searched on a downscaled copy.
    assert [verdict(Outcome("large", status, 1.0)) for status in (200, 413, 422, 500)] == [
        "ok",
        "ok",
        "ok",
        "error",
    ]


def test_summarize_counts_per_kind_and_takes_percentiles_of_ok_answers_only() -> None:
    searches = [Outcome("search", 200, seconds / 1000) for seconds in range(1, 101)]  # 1..100 ms
    others = [
        Outcome("search", 503, 0.0001, retry_after=True),
        Outcome("search", 500, 9.0, detail="boom"),
        Outcome("ingest", 200, 0.5),
        Outcome("ingest", None, 120.0, detail="ReadTimeout: timed out"),
    ]
    summaries = summarize(searches + others, wall_s=10.0)
    assert list(summaries) == ["search", "ingest"]
    search = summaries["search"]
    assert (search.requests, search.per_s) == (102, 10.2)
    assert search.verdicts == {"ok": 100, "shed": 1, "error": 1}
    assert search.statuses == {"200": 100, "503": 1, "500": 1}
    assert search.p50_ms == pytest.approx(50.5)
    assert search.p99_ms == pytest.approx(99.01)  # numpy's linear interpolation over 1..100
    assert (search.error_count, search.errors) == (1, ["500: boom"])
    ingest = summaries["ingest"]
    assert ingest.statuses == {"200": 1, "no answer": 1}
    assert ingest.errors == ["no answer: ReadTimeout: timed out"]
    assert ingest.p50_ms == ingest.p99_ms == pytest.approx(500.0)


def test_summarize_has_no_percentiles_without_an_ok_answer() -> None:
    [summary] = summarize([Outcome("large", 500, 1.0)], wall_s=1.0).values()
    assert (summary.p50_ms, summary.p99_ms, summary.error_count) == (None, None, 1)


def test_vm_rss_is_read_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  999999 kB\nVmRSS:\t  524288 kB\nThreads:\t4\n"
    assert vm_rss_mb(status) == 512.0
    with pytest.raises(ValueError, match="VmRSS"):
        vm_rss_mb("Name:\tzombie\n")
    assert 1 < rss_mb(os.getpid()) < 100_000  # this very process, in MiB


def test_large_png_is_a_few_kilobytes_declaring_6300_by_6300() -> None:
    data = large_png()
    assert len(data) < 10_000
    assert struct.unpack(">II", data[16:24]) == (6300, 6300)  # the IHDR chunk's width and height


def _phase(searches_ms: list[float], rss: tuple[float, float], extra: list[Outcome] | None = None) -> Phase:
    outcomes = [Outcome("search", 200, ms / 1000) for ms in searches_ms] + (extra or [])
    before, after = rss
    memory = Memory({"embedder": before, "search": 100.0}, {"embedder": 2 * after, "search": 110.0})
    memory.after = {"embedder": after, "search": 105.0}
    return Phase(outcomes, wall_s=10.0, memory=memory)


def test_load_section_judges_the_p99_ratio_and_the_embedders_memory() -> None:
    plan = LoadPlan(clients=32, seconds=10.0, gallery_photos=10)
    a = _phase([100.0] * 99 + [200.0], rss=(300.0, 500.0))
    # p99 of normal searches 1.5x A's; the embedder ends 10% above where B began.
    b = _phase([150.0] * 99 + [300.0], rss=(500.0, 550.0), extra=[Outcome("large", 413, 0.01)])
    out = section(plan, a, b, large_bytes=4896)
    rows = {row.measurement: row for row in out.rows}
    during = rows["B. as A, and a 6300x6300 PNG every 2 s: POST /search, a gallery photo"]
    assert during.met is True and during.notes.startswith("p99 1.50x A's")
    embedder = rows["B. as A, and a 6300x6300 PNG every 2 s: embedder RSS"]
    assert (embedder.value, embedder.met) == (550.0, True)
    assert "before 500 MiB (+10%)" in embedder.notes and "idle, before A: 300 MiB" in embedder.notes
    assert rows["B. as A, and a 6300x6300 PNG every 2 s: POST /search, the 6300x6300 PNG"].met is True
    assert (out.summary["load_errors"], out.summary["load_shed"]) == ("0", "0")
    assert out.summary["load_large_p99_ratio"] == "1.50"
    assert out.summary["load_embedder_rss_change_pct"] == "+10.0"
    assert out.details["load"]["phases"]["B"]["requests"]["large"]["statuses"] == {"413": 1}
    json.dumps(out.details)  # bench.json takes it as it is

    refused = [Outcome("search", 500, 0.1, detail="boom"), Outcome("ingest", 503, 0.1, retry_after=True)]
    slow = _phase([400.0] * 100, rss=(500.0, 700.0), extra=refused)
    out = section(plan, a, slow, large_bytes=4896)
    rows = {row.measurement: row for row in out.rows}
    assert rows["B. as A, and a 6300x6300 PNG every 2 s: POST /search, a gallery photo"].met is False
    assert rows["B. as A, and a 6300x6300 PNG every 2 s: embedder RSS"].met is False  # +40%
    assert (out.summary["load_errors"], out.summary["load_shed"]) == ("1", "1")
