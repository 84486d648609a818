"""What every benchmark section produces (rows, plots, key figures), and its markdown, JSON and PNG forms."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Figure without pyplot: no GUI backend and no global figure state, so it works headless.
from matplotlib.figure import Figure

from tools.bench.timing import Timing


@dataclass(frozen=True)
class Comparison:
    """A baseline measured in the same run, and how many times faster ours is than it."""

    baseline: str
    figure: str  # the baseline's own number, with its unit
    speedup: float


@dataclass
class Row:
    component: str
    measurement: str
    value: float | None  # the median figure; None when the measurement was skipped
    unit: str
    spread: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    goal: str = ""
    met: bool | None = None
    notes: str = ""


@dataclass(frozen=True)
class Curve:
    label: str
    x: list[float]
    y: list[float]
    y_high: list[float] | None = None  # drawn as a band from y to y_high (e.g. p50 to p95)


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    x_label: str
    y_label: str
    curves: list[Curve]
    log_x: bool = False
    log_y: bool = False
    x_ticks: list[float] | None = None  # label exactly these (a log axis would show only powers of 10)


@dataclass
class Section:
    rows: list[Row] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)  # for the last line of key=value pairs
    details: dict[str, Any] = field(default_factory=dict)  # raw numbers for bench.json
    plots: list[Plot] = field(default_factory=list)

    def extend(self, other: Section) -> None:
        self.rows += other.rows
        self.summary |= other.summary
        self.details |= other.details
        self.plots += other.plots


def number(value: float) -> str:
    """Three significant figures without scientific notation: tables are read by people."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def latency_row(component: str, measurement: str, timing: Timing, **extra: Any) -> Row:
    return Row(component, measurement, timing.median_ms, "ms", f"p95 {number(timing.p95_ms)}", **extra)


def rate_row(component: str, measurement: str, timing: Timing, unit: str, **extra: Any) -> Row:
    low, high = timing.rate_iqr
    return Row(component, measurement, timing.rate, unit, f"IQR {number(low)}-{number(high)}", **extra)


def skipped_row(component: str, measurement: str, reason: str) -> Row:
    return Row(component, measurement, None, "", notes=f"skipped: {reason}")


def _speedup(value: float) -> str:
    return f"{value:.0f}x" if value >= 100 else f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def _cells(row: Row) -> list[str]:
    value = "-" if row.value is None else f"{number(row.value)} {row.unit}".strip()
    versus = "; ".join(f"{_speedup(c.speedup)} vs {c.baseline} ({c.figure})" for c in row.comparisons)
    goal = row.goal + ("" if row.met is None else " ✓" if row.met else " ✗")
    return [row.component, row.measurement, value, row.spread, versus, goal, row.notes]


def markdown(rows: Sequence[Row]) -> str:
    header = [
        "component",
        "measurement",
        "median",
        "spread",
        "speed-up vs baseline (same run)",
        "goal",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def summary_line(summary: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in summary.items())


def write_json(section: Section, metadata: dict[str, Any], path: Path) -> None:
    document = {
        **metadata,
        "rows": [asdict(row) for row in section.rows],
        "summary": section.summary,
        "details": section.details,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def rows_from_json(document: dict[str, Any]) -> list[Row]:
    """The table's rows back from bench.json (for the README section)."""
    rows = []
    for raw in document["rows"]:
        comparisons = [Comparison(**c) for c in raw.get("comparisons", [])]
        rows.append(Row(**{**raw, "comparisons": comparisons}))
    return rows


def draw(plot: Plot, directory: Path) -> Path:
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for curve in plot.curves:
        (line,) = axes.plot(curve.x, curve.y, marker="o", label=curve.label)
        if curve.y_high is not None:
            axes.fill_between(curve.x, curve.y, curve.y_high, color=line.get_color(), alpha=0.15)
    if plot.log_x:
        axes.set_xscale("log")
    if plot.log_y:
        axes.set_yscale("log")
    if plot.x_ticks is not None:
        axes.set_xticks(plot.x_ticks, [f"{tick:g}" for tick in plot.x_ticks])
        axes.minorticks_off()
    axes.set_xlabel(plot.x_label)
    axes.set_ylabel(plot.y_label)
    axes.set_title(plot.title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = directory / plot.file
    figure.savefig(path, dpi=120)
    return path
