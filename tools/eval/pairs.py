"""LFW protocol files: the pairs, folds and photo layout.

View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``) opens with one number ``n``: n matched
pairs then n mismatched ones. View 2 (``pairs.txt``) opens with ``folds n``: ``folds`` blocks
of n matched then n mismatched pairs. A matched pair is ``name i j``, a mismatched one
``name1 i name2 j``; image i of a name is ``<name>/<name>_<i:04d>.jpg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    first: str  # photo path relative to the LFW folder
    second: str
    same: bool


@dataclass(frozen=True)
class Split:
    """One round of the protocol: the threshold is chosen on ``train``, judged on ``test``."""

    name: str
    train: list[Pair]
    test: list[Pair]


class PairsFormatError(ValueError):
    pass


def photo_path(name: str, index: int) -> str:
    return f"{name}/{name}_{index:04d}.jpg"


def _parse_pair(fields: list[str], where: str) -> Pair:
    try:
        if len(fields) == 3:
            name, i, j = fields
            return Pair(photo_path(name, int(i)), photo_path(name, int(j)), same=True)
        if len(fields) == 4:
            name1, i, name2, j = fields
            return Pair(photo_path(name1, int(i)), photo_path(name2, int(j)), same=False)
    except ValueError:
        pass
    raise PairsFormatError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}")


def parse_pairs(text: str, source: str = "pairs") -> list[list[Pair]]:
    """Returns the folds of a pairs file (one fold for View 1 files, ten for View 2)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PairsFormatError(f"{source}: empty file")
    try:
        header = [int(token) for token in lines[0]]
    except ValueError:
        raise PairsFormatError(f"{source}: the first line must be 'n' or 'folds n'") from None
    if len(header) == 1:
        folds, per_half = 1, header[0]
    elif len(header) == 2:
        folds, per_half = header
    else:
        raise PairsFormatError(f"{source}: the first line must be 'n' or 'folds n'")
    body = lines[1:]
    if len(body) != 2 * folds * per_half:
        raise PairsFormatError(
            f"{source}: header announces {folds} x 2 x {per_half} pairs, file has {len(body)}"
        )
    parsed = [_parse_pair(fields, f"{source} line {number}") for number, fields in enumerate(body, start=2)]
    result = []
    for fold in range(folds):
        block = parsed[2 * per_half * fold : 2 * per_half * (fold + 1)]
        # The position says which kind a pair must be; a mismatch means a mis-cut or wrong header.
        if any(pair.same != (k < per_half) for k, pair in enumerate(block)):
            raise PairsFormatError(
                f"{source}: fold {fold + 1} does not hold {per_half} matched then mismatched"
            )
        result.append(block)
    return result


def read_pairs(path: Path) -> list[list[Pair]]:
    return parse_pairs(path.read_text(), source=str(path))


def dev_split(train: list[list[Pair]], test: list[list[Pair]]) -> list[Split]:
    """View 1: one split, threshold from DevTrain, accuracy on DevTest."""
    return [Split("dev", [p for fold in train for p in fold], [p for fold in test for p in fold])]


def ten_fold_splits(folds: list[list[Pair]]) -> list[Split]:
    """View 2: each fold in turn is the test set, the other folds choose its threshold."""
    if len(folds) < 2:
        raise PairsFormatError(f"cross-validation needs at least 2 folds, the file has {len(folds)}")
    return [
        Split(
            f"fold{k + 1}",
            [pair for other, fold in enumerate(folds) if other != k for pair in fold],
            list(folds[k]),
        )
        for k in range(len(folds))
    ]


def balanced_prefix(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first ``limit`` pairs, half matched and half mismatched (files list matched ones first)."""
    same = [pair for pair in pairs if pair.same][: (limit + 1) // 2]
    different = [pair for pair in pairs if not pair.same][: limit // 2]
    return same + different


def lfw_gallery(root: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """``(photo path relative to root, identity)`` for every photo of an LFW-layout folder.

    With ``limit``, whole identities in name order until ``limit`` photos, so every kept
    identity still has all of its photos (precision depends on how many there are).
    """
    photos: list[tuple[str, str]] = []
    for person in sorted(path for path in root.iterdir() if path.is_dir()):
        files = sorted(
            path for path in person.iterdir() if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}
        )
        if limit is not None and photos and len(photos) + len(files) > limit:
            break
        photos.extend((f"{person.name}/{path.name}", person.name) for path in files)
    return photos
