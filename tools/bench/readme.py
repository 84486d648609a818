"""Rewrite the README's speed section from the last benchmark run, so no number in it is typed by hand.

    python -m tools.bench.readme [--json reports/bench.json] [--readme README.md]

Everything between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is replaced by the table of
``reports/bench.json`` with the machine, date and command it came from. Results of a ``--quick``
run, or of a run of only some sections, are refused unless ``--allow-partial``: the README states
what the full run measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.bench.report import markdown, rows_from_json

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


class SectionError(ValueError):
    pass


def render(document: dict[str, Any]) -> str:
    """The section's body for one bench.json document."""
    machine = document["machine"]
    versions = ", ".join(f"{name} {value}" for name, value in document.get("versions", {}).items())
    minutes = document["elapsed_s"] / 60
    lines = [
        f"Measured on {document['date'][:10]} with `{document['command']}` ({document['mode']} run, "
        f"{minutes:.0f} min) on {machine['cores']} cores, {machine['cpu']} ({machine['platform']}, "
        f"Python {machine['python']}; {versions}). Medians; spreads are p95 for latencies and the "
        "interquartile range for rates; every baseline was measured in the same run, on the same inputs.",
        "",
        markdown(rows_from_json(document)),
        "",
        "Plots: `reports/bench_index_latency.png`, `reports/bench_embedding_throughput.png`. "
        "Regenerate this section with `python -m tools.bench.readme` after `make bench`.",
    ]
    return "\n".join(lines)


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the markers replaced by ``body``; the markers stay."""
    start = text.find(START)
    end = text.find(END)
    if start < 0 or end < 0:
        raise SectionError(f"the README needs both {START} and {END}")
    if end < start or text.count(START) > 1 or text.count(END) > 1:
        raise SectionError(f"expected one {START} followed by one {END}")
    return f"{text[: start + len(START)]}\n{body}\n{text[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept a --quick run or one of only some sections"
    )
    args = parser.parse_args(argv)
    document = json.loads(args.json.read_text())
    if not document.get("complete") and not args.allow_partial:
        print(
            f"{args.json} is not from a complete run ({document['mode']}, sections {document['sections']}); "
            "run `make bench` first, or pass --allow-partial",
            file=sys.stderr,
        )
        return 2
    try:
        updated = replace_section(args.readme.read_text(), render(document))
    except SectionError as error:
        print(f"{args.readme}: {error}", file=sys.stderr)
        return 2
    args.readme.write_text(updated)
    print(f"updated the results section of {args.readme} from {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
