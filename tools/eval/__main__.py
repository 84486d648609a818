"""``python -m tools.eval`` (``make eval``): LFW verification and retrieval, ours vs the peer.

Paths default to ../shared/data and can also come from the environment, so
``make eval LFW_DIR=/path/to/lfw PAIRS=/path/to/pairs.txt`` switches to View 2's ten folds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from embedder_service.settings import EmbedderSettings
from facesearch_common.logging import configure_logging
from tools.bench.timing import evenly_spaced, machine
from tools.eval import detection
from tools.eval.augment import JitterEmbedder
from tools.eval.embedding import (
    ALL_VARIANTS,
    EmbeddingTable,
    OurPipeline,
    PhotoEmbedder,
    Variant,
    embed_photos,
    milliseconds_per_photo,
)
from tools.eval.normalization import DEFAULT_CALIBRATION_FAR, DEFAULT_DRAWS, evaluate_normalization
from tools.eval.pairs import Pair, Split, balanced_prefix, dev_split, lfw_gallery, read_pairs, ten_fold_splits
from tools.eval.peer import PeerPipeline
from tools.eval.report import (
    markdown,
    normalization_markdown,
    plot_retrieval,
    plot_roc,
    summary_line,
    write_json,
)
from tools.eval.rerank import KReciprocal, QueryExpansion, Reranker
from tools.eval.runner import NO_RERANK, PipelineResult, evaluate

SHARED = Path("..") / "shared" / "data"
# Parameters chosen on half of LFW dev's identities (the rerank module says why these).
RERANKERS: tuple[Reranker, ...] = (QueryExpansion(), KReciprocal())
QUICK_LFW = 300


def detection_section(args: argparse.Namespace, settings: EmbedderSettings) -> tuple[str, dict[str, Any]]:
    """The detection benchmark's markdown and JSON; nothing when no detector is chosen."""
    if not args.detectors:
        return "", {}
    sets, results = detection.run(
        args.detectors, settings, SHARED, QUICK_LFW if args.quick else None, args.wider_dir
    )
    table = detection.markdown(results, sets)
    print(table, file=sys.stderr)
    return f"\n## Detection\n\n{table}", {"detection": detection.to_json(results)}


def normalization_section(
    args: argparse.Namespace,
    name: str,
    table: EmbeddingTable,
    splits: Sequence[Split],
    gallery: Sequence[Path],
) -> tuple[str, dict[str, Any], float | None]:
    """The AS-norm section's markdown, JSON and normalised threshold for one variant."""
    if args.cohort_draws <= 0 or not gallery:
        return "", {}, None
    result = evaluate_normalization(
        table, splits, args.lfw_dir, gallery, draws=args.cohort_draws, calibration_far=args.calibration_far
    )
    text = normalization_markdown(result, name)
    if isinstance(result, str):
        return text, {"normalization": result}, None
    return text, {"normalization": result.to_json()}, result.threshold


def _env_path(name: str, default: Path | None = None) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-dir", type=Path, default=_env_path("LFW_DIR", SHARED / "lfw_dev"))
    parser.add_argument(
        "--pairs-train",
        type=Path,
        default=_env_path("PAIRS_TRAIN", SHARED / "lfw_meta" / "pairsDevTrain.txt"),
    )
    parser.add_argument(
        "--pairs-test", type=Path, default=_env_path("PAIRS_TEST", SHARED / "lfw_meta" / "pairsDevTest.txt")
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=_env_path("PAIRS"),
        help="a View 2 pairs.txt: ten-fold cross-validation instead of the View 1 train/test split",
    )
    parser.add_argument(
        "--gallery",
        type=Path,
        default=_env_path("GALLERY"),
        help="retrieval gallery in LFW layout (one folder per person); default: --lfw-dir",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        type=Variant.parse,
        default=list(ALL_VARIANTS),
        metavar="VARIANT",
        help="our pipeline variants; none for the peer alone (default: all four)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the face_recognition pipeline")
    parser.add_argument(
        "--jitters",
        nargs="*",
        type=int,
        default=[4, 10],
        metavar="N",
        help="also our default alignment with dlib's jitter test-time augmentation, N copies per face"
        " (default: 4 and 10; none to skip)",
    )
    parser.add_argument(
        "--limit", type=int, help="at most N pairs per fold and N gallery photos (quick runs)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--cache-dir", type=Path, help="embedding cache (default: OUT/cache)")
    parser.add_argument(
        "--timing-photos", type=int, default=50, help="photos timed per pipeline (0: no timing)"
    )
    parser.add_argument("--far", type=float, default=1e-3, help="false accept rate for TAR@FAR")
    parser.add_argument(
        "--cohort-draws",
        type=int,
        default=DEFAULT_DRAWS,
        help="AS-norm cohorts drawn from the gallery for the default variant (0: no AS-norm section)",
    )
    parser.add_argument(
        "--calibration-far",
        type=float,
        default=DEFAULT_CALIBRATION_FAR,
        help="false-match rate on the training pairs that fixes the normalised threshold",
    )
    parser.add_argument(
        "--detectors",
        nargs="*",
        type=detection.DetectorChoice.parse,
        default=list(detection.DEFAULT_CHOICES),
        metavar="NAME[@THRESHOLD]",
        help="detectors to benchmark; none skips the detection section (default: MTCNN at 0.7 "
        "and at the service's default, YuNet, SCRFD)",
    )
    parser.add_argument(
        "--wider-dir", type=Path, default=_env_path("WIDER_DIR"), help="a WIDER FACE layout to add"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"detection on {QUICK_LFW} photos of each LFW folder"
    )
    parser.add_argument("--detection-only", action="store_true", help="the detection section alone")
    return parser.parse_args(argv)


def load_splits(args: argparse.Namespace) -> tuple[list[Split], str]:
    def limited(folds: list[list[Pair]]) -> list[list[Pair]]:
        return [balanced_prefix(fold, args.limit) for fold in folds] if args.limit else folds

    if args.pairs is not None:
        folds = limited(read_pairs(args.pairs))
        return ten_fold_splits(folds), f"{len(folds)}-fold"
    return dev_split(limited(read_pairs(args.pairs_train)), limited(read_pairs(args.pairs_test))), "View 1"


def load_embedders(
    variants: Sequence[Variant], settings: EmbedderSettings, with_peer: bool
) -> list[tuple[str, PhotoEmbedder]]:
    embedders: list[tuple[str, PhotoEmbedder]] = []
    if variants:
        embedders.append(("ours", OurPipeline(variants, settings)))
    if with_peer:
        peer = PeerPipeline.load()
        if isinstance(peer, str):
            print(f"peer face_recognition skipped: {peer}", file=sys.stderr)
        else:
            embedders.append(("peer", peer))
    return embedders


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Service logs go to stderr, so stdout holds only the tables and the key=value line.
    configure_logging("WARNING", json_output=False)
    if args.detection_only:
        table, found = detection_section(args, EmbedderSettings())
        args.out.mkdir(parents=True, exist_ok=True)
        header = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
        }
        (args.out / "eval.json").write_text(json.dumps(header | found, indent=2) + "\n")
        (args.out / "eval.md").write_text(table)
        print(f"wrote {args.out}/eval.json and eval.md (detection only)", file=sys.stderr)
        return 0
    splits, protocol = load_splits(args)
    gallery_dir = args.gallery or args.lfw_dir
    gallery = [(gallery_dir / path, identity) for path, identity in lfw_gallery(gallery_dir, args.limit)]
    pair_photos = [
        args.lfw_dir / path for s in splits for p in s.train + s.test for path in (p.first, p.second)
    ]
    photos = sorted(set(pair_photos) | {path for path, _ in gallery})
    missing = [path for path in photos if not path.is_file()]
    if missing:
        print(f"{len(missing)} photos named by the pairs are missing, e.g. {missing[0]}", file=sys.stderr)
        return 2
    test_pairs = sum(len(split.test) for split in splits)
    print(
        f"LFW {protocol}: {len(splits)} split(s), {test_pairs} test pairs; gallery {len(gallery)} photos "
        f"of {len({identity for _, identity in gallery})} people; {len(photos)} photos to embed",
        file=sys.stderr,
    )

    settings = EmbedderSettings()
    embedders = load_embedders(args.variants, settings, with_peer=not args.no_peer)
    if args.jitters:
        embedders.append(("jitter", JitterEmbedder(args.jitters, settings)))
    if not embedders:
        print("nothing to evaluate: no variants and no peer", file=sys.stderr)
        return 2

    cache_dir = args.cache_dir or args.out / "cache"
    # Two more than asked: milliseconds_per_photo spends the first two warming up.
    timing = evenly_spaced(photos, args.timing_photos + 2) if args.timing_photos > 0 else []

    results: list[PipelineResult] = []
    all_tables: dict[str, EmbeddingTable] = {}
    for label, embedder in embedders:
        tables = embed_photos(embedder, photos, cache_dir, label)
        all_tables |= tables
        for name in embedder.names:
            results.append(evaluate(name, tables[name], splits, args.lfw_dir, gallery, RERANKERS, args.far))
    speeds = milliseconds_per_photo([embedder for _, embedder in embedders], timing)
    for result in results:
        result.ms_per_photo = speeds.get(result.name)

    print(markdown(results, protocol, args.far))
    default_name = Variant(settings.alignment, settings.flip_augment).name
    default = next((r for r in results if r.name == default_name), results[0])
    peer_result = next((r for r in results if r.name == PeerPipeline.names[0] and r is not default), None)
    rerank_names = [name for name in default.retrieval if name != NO_RERANK]
    best_rerank = max(rerank_names, key=lambda name: default.retrieval[name].precision, default=None)
    normalization_table, normalization_json, normalized_threshold = normalization_section(
        args, default.name, all_tables[default.name], splits, [path for path, _ in gallery]
    )
    print(normalization_table)
    metadata = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m tools.eval", *(argv if argv is not None else sys.argv[1:])]),
        "protocol": protocol,
        "lfw_dir": str(args.lfw_dir),
        "pairs": [str(p) for p in ([args.pairs] if args.pairs else [args.pairs_train, args.pairs_test])],
        "gallery": str(gallery_dir),
        "limit": args.limit,
        "machine": machine(),
        "onnxruntime": version("onnxruntime"),
        "model_checksums": {label: embedder.cache_tag() for label, embedder in embedders},
        "default_variant": default.name,
        "timing_photos": max(0, len(timing) - 2),
    }
    detection_table, detection_json = detection_section(args, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(results, metadata | normalization_json | detection_json, args.out / "eval.json")
    (args.out / "eval.md").write_text(
        markdown(results, protocol, args.far) + normalization_table + detection_table
    )
    plot_roc(results, args.out / "eval_roc.png", args.far)
    if gallery:
        plot_retrieval(results, args.out / "eval_retrieval.png")
    print(f"wrote {args.out}/eval.json, eval.md and plots", file=sys.stderr)
    print(summary_line(default, peer_result, best_rerank, normalized_threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
