"""Results out: markdown tables, a JSON file, PNG plots and a last line of key=value pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

# Figure without pyplot: no GUI backend and no global figure state, so it works headless.
from matplotlib.figure import Figure

from tools.eval.metrics import Summary, roc
from tools.eval.normalization import NormalizationResult, summarize
from tools.eval.runner import NO_RERANK, PipelineResult


def _percent(result: PipelineResult, key: str) -> str:
    summary = result.summary[key]
    text = f"{100 * summary.mean:.2f}"
    return text + (f" ± {100 * summary.std:.2f}" if len(result.folds) > 1 else "")


def _retrieval_cells(result: PipelineResult, method: str) -> list[str]:
    found = result.retrieval.get(method)
    if found is None:
        return ["-", "-", "-"]
    return [f"{found.precision:.4f}", f"{found.mean_average_precision:.4f}", f"{found.rank1:.4f}"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: Sequence[PipelineResult], protocol: str, far: float) -> str:
    main = _table(
        [
            "pipeline",
            f"LFW accuracy % ({protocol})",
            "threshold (cosine)",
            "false-match rate %",
            "AUC",
            f"TAR@FAR{far:g} %",
            "precision@min(20,n-1)",
            "mAP",
            "rank-1",
            "ms/photo",
            "photos without face",
        ],
        [
            [
                result.name,
                _percent(result, "accuracy"),
                f"{result.summary['threshold'].mean:.4f}",
                _percent(result, "false_match_rate"),
                f"{result.summary['auc'].mean:.4f}",
                _percent(result, "tar_at_far"),
                *_retrieval_cells(result, NO_RERANK),
                f"{result.ms_per_photo:.0f}" if result.ms_per_photo is not None else "-",
                f"{result.photos_without_face}/{result.photos}",
            ]
            for result in results
        ],
    )
    rerank_rows = [
        [result.name, method, *_retrieval_cells(result, method)]
        for result in results
        for method in result.retrieval
    ]
    reranked = _table(["pipeline", "re-ranking", "precision@min(20,n-1)", "mAP", "rank-1"], rerank_rows)
    return f"{main}\n\nRetrieval with re-ranking of the top hits:\n\n{reranked}\n"


def _spread(summary: Summary, scale: float, digits: int, spread: bool) -> str:
    text = f"{scale * summary.mean:.{digits}f}"
    return text + (f" ± {scale * summary.std:.{digits}f}" if spread else "")


def normalization_markdown(result: NormalizationResult | str, pipeline: str) -> str:
    """Raw cosine and AS-norm at thresholds calibrated on the training pairs, or why there is no cohort."""
    heading = f"\n## Score normalisation (AS-norm), {pipeline}\n\n"
    if isinstance(result, str):
        return f"{heading}No cohort: {result}.\n"
    protocol, far = result.protocol, f"{100 * result.calibration_far:g}%"
    several = len(result.raw_at_far) > 1
    rows = [
        ("raw cosine", "best accuracy", result.raw_best_accuracy, several),
        ("raw cosine", f"false-match rate {far}", result.raw_at_far, several),
        (
            f"AS-norm, {len(result.cohort_sizes)} cohort draws",
            f"false-match rate {far}",
            result.normalized,
            True,
        ),
    ]
    cells = []
    for scores, chosen_for, points, spread in rows:
        summary = summarize(points)
        rates = ("accuracy", "false_match_rate", "true_match_rate")
        cells.append(
            [scores, chosen_for, _spread(summary["threshold"], 1, 4, spread)]
            + [_spread(summary[key], 100, 2, spread) for key in rates]
        )
    header = ["scores", "threshold chosen for", "threshold", "accuracy %", "false-match rate %"]
    table = _table([*header, "true-match rate %"], cells)
    return (
        f"{heading}Cohort: the service's `draw_cohort` over the gallery's faces in random order "
        f"(size {protocol.size}, top-K {protocol.top_k}, distinct below {protocol.distinct_below}), "
        "each pair's own photos left out; thresholds chosen on the training pairs, numbers on the test "
        f"pairs (mean ± sd over draws and splits).\n\n{table}\n\n"
        f"normalized_threshold for the model manifest: **{result.threshold:.2f}**\n"
    )


def to_json(results: Sequence[PipelineResult], metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        **metadata,
        "pipelines": [
            {
                "name": result.name,
                "folds": [asdict(fold) for fold in result.folds],
                "summary": {key: asdict(value) for key, value in result.summary.items()},
                "test_pairs": len(result.test_scores),
                "test_pairs_without_face": result.test_pairs_without_face,
                "retrieval": {method: asdict(value) for method, value in result.retrieval.items()},
                "photos": result.photos,
                "photos_without_face": result.photos_without_face,
                "ms_per_photo": result.ms_per_photo,
            }
            for result in results
        ],
    }


def write_json(results: Sequence[PipelineResult], metadata: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results, metadata), indent=2) + "\n")


def plot_roc(results: Sequence[PipelineResult], path: Path, far: float) -> None:
    figure = Figure(figsize=(7, 5))
    axes = figure.subplots()
    # A log axis cannot show FAR 0: such points sit at the left edge, half the smallest
    # non-zero rate the pairs can measure.
    negatives = min(int(np.count_nonzero(~result.test_same)) for result in results)
    edge = 0.5 / max(1, negatives)
    lowest = 1.0
    for result in results:
        fpr, tpr = roc(result.test_scores, result.test_same)
        label = f"{result.name} (AUC {result.summary['auc'].mean:.4f})"
        axes.step(np.maximum(fpr, edge), tpr, where="post", label=label)
        lowest = min(lowest, float(tpr[fpr == 0].max()))
    axes.set_xlim(edge, 1.0)
    # Good pipelines differ only in the top few percent of TAR: zoom there.
    axes.set_ylim(max(0.0, lowest - 0.05), 1.005)
    axes.axvline(far, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("false accept rate (different-person pairs called a match)")
    axes.set_ylabel("true accept rate")
    axes.set_title("LFW verification ROC (test pairs)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_retrieval(results: Sequence[PipelineResult], path: Path) -> None:
    methods = list(dict.fromkeys(method for result in results for method in result.retrieval))
    figure = Figure(figsize=(max(7, 1.6 * len(results)), 5))
    axes = figure.subplots()
    width = 0.8 / max(1, len(methods))
    positions = np.arange(len(results))
    for k, method in enumerate(methods):
        values = [
            result.retrieval[method].precision if method in result.retrieval else 0.0 for result in results
        ]
        bars = axes.bar(positions + k * width, values, width, label=method)
        axes.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    axes.set_xticks(
        positions + width * (len(methods) - 1) / 2, [result.name for result in results], rotation=15
    )
    low = min((r.precision for result in results for r in result.retrieval.values()), default=0.0)
    axes.set_ylim(max(0.0, low - 0.05), 1.0)
    axes.set_ylabel("mean precision@min(20, n-1)")
    axes.set_title("Retrieval precision by pipeline and re-ranking")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def summary_line(
    default: PipelineResult,
    peer: PipelineResult | None,
    best_reranker: str | None,
    normalized_threshold: float | None = None,
) -> str:
    """The last line of output: key=value pairs for scripts (README results, CI logs)."""
    values: dict[str, str] = {
        "variant": default.name,
        "lfw_accuracy": f"{default.summary['accuracy'].mean:.4f}",
        "lfw_accuracy_std": f"{default.summary['accuracy'].std:.4f}",
        "lfw_threshold": f"{default.summary['threshold'].mean:.4f}",
        "lfw_far": f"{default.summary['false_match_rate'].mean:.4f}",
        "lfw_auc": f"{default.summary['auc'].mean:.4f}",
        "tar_at_far_1e-3": f"{default.summary['tar_at_far'].mean:.4f}",
    }
    plain = default.retrieval.get(NO_RERANK)
    if plain is not None:
        values |= {
            "precision_at_20": f"{plain.precision:.4f}",
            "map": f"{plain.mean_average_precision:.4f}",
            "rank1": f"{plain.rank1:.4f}",
        }
    if best_reranker is not None and best_reranker in default.retrieval:
        reranked = default.retrieval[best_reranker]
        values |= {
            "rerank": best_reranker,
            "precision_at_20_reranked": f"{reranked.precision:.4f}",
            "map_reranked": f"{reranked.mean_average_precision:.4f}",
            "rank1_reranked": f"{reranked.rank1:.4f}",
        }
    if normalized_threshold is not None:
        values["normalized_threshold"] = f"{normalized_threshold:.2f}"
    if default.ms_per_photo is not None:
        values["ms_per_photo"] = f"{default.ms_per_photo:.1f}"
    if peer is not None:
        values |= {
            "peer_lfw_accuracy": f"{peer.summary['accuracy'].mean:.4f}",
            "peer_lfw_far": f"{peer.summary['false_match_rate'].mean:.4f}",
        }
        if NO_RERANK in peer.retrieval:
            values["peer_precision_at_20"] = f"{peer.retrieval[NO_RERANK].precision:.4f}"
            values["peer_rank1"] = f"{peer.retrieval[NO_RERANK].rank1:.4f}"
        if peer.ms_per_photo is not None:
            values["peer_ms_per_photo"] = f"{peer.ms_per_photo:.1f}"
            if default.ms_per_photo:
                values["speedup_vs_peer"] = f"{peer.ms_per_photo / default.ms_per_photo:.1f}"
    return " ".join(f"{key}={value}" for key, value in values.items())
