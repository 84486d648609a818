"""Rewrite the README's results sections from the last runs, so no number in them is typed by hand.

    python -m tools.bench.readme [--json reports/bench.json] [--eval-json reports/eval.json]
                                 [--readme README.md]

Everything between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is replaced by the table of
``reports/bench.json`` with the machine, date and command it came from; likewise the accuracy
tables of ``make eval`` (``reports/eval.md``, described by ``reports/eval.json``) between
``<!-- eval:start -->`` and ``<!-- eval:end -->``. Results of a ``--quick`` bench, of a run of only
some sections, or of an eval limited to some photos are refused unless ``--allow-partial``: the
README states what the full runs measured.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.bench.report import markdown, rows_from_json

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
EVAL_START = "<!-- eval:start -->"
EVAL_END = "<!-- eval:end -->"


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


def render_eval(document: dict[str, Any], tables: str) -> str:
    """The accuracy section: ``make eval``'s markdown tables, with what produced them."""
    machine = document["machine"]
    return "\n".join(
        [
            f"Measured on {document['date'][:10]} with `{document['command']}` ({document['protocol']}; "
            f"gallery `{document['gallery']}`) on {machine['cores']} cores ({machine['platform']}, Python "
            f"{machine['python']}, onnxruntime {document['onnxruntime']}). The peer is the "
            "`face_recognition` package (dlib HOG detector, dlib 5-point alignment, the same dlib "
            "ResNet), run on the same photos.",
            "",
            # The report's sections sit under the README's "Results" heading, one level down.
            re.sub(r"^## ", "### ", tables.strip(), flags=re.MULTILINE),
            "",
            "Plots: `reports/eval_roc.png`, `reports/eval_retrieval.png`. Regenerate this section with "
            "`python -m tools.bench.readme` after `make eval`.",
        ]
    )


def replace_section(text: str, body: str, start_marker: str = START, end_marker: str = END) -> str:
    """``text`` with everything between the markers replaced by ``body``; the markers stay."""
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start < 0 or end < 0:
        raise SectionError(f"the README needs both {start_marker} and {end_marker}")
    if end < start or text.count(start_marker) > 1 or text.count(end_marker) > 1:
        raise SectionError(f"expected one {start_marker} followed by one {end_marker}")
    return f"{text[: start + len(start_marker)]}\n{body}\n{text[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--eval-json", type=Path, default=Path("reports/eval.json"))
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
        if args.eval_json.is_file():
            evaluation = json.loads(args.eval_json.read_text())
            if evaluation.get("limit") and not args.allow_partial:
                print(
                    f"{args.eval_json} is from a run limited to some photos; run `make eval`", file=sys.stderr
                )
                return 2
            tables = args.eval_json.with_suffix(".md").read_text()
            updated = replace_section(updated, render_eval(evaluation, tables), EVAL_START, EVAL_END)
    except SectionError as error:
        print(f"{args.readme}: {error}", file=sys.stderr)
        return 2
    args.readme.write_text(updated)
    print(
        f"updated the results sections of {args.readme} from {args.json} and {args.eval_json}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
