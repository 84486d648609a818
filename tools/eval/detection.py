"""The detection benchmark: precision and recall at IoU 0.5, false faces on photos without one,
and speed at three photo sizes, for every detector available.

Ground truth comes in four kinds: boxes (dlib's ``faces_*.xml`` for its PASCAL photos, a
WIDER FACE layout), a count (CompreFace's ``compreface_NNN_K.jpg`` hold K faces), none (the
no-face set), and LFW's one named face per photo, found when a box covers the photo's centre
(LFW crops centre on the named person; anyone else in the photo is a bystander, not a misfire).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from embedder_service.models.detector import REFERENCE_THRESHOLDS, Detection
from embedder_service.models.detectors import DETECTOR_NAMES, DetectorMissingError, build_detector
from embedder_service.models.manifest import Manifest, load_manifest
from embedder_service.models.pipeline import FaceDetector
from embedder_service.models.session import RuntimeOptions
from embedder_service.settings import EmbedderSettings
from tools.bench.timing import evenly_spaced, time_calls

IOU_MATCH = 0.5
MTCNN_PUBLISHED_THRESHOLD = REFERENCE_THRESHOLDS[2]
SPEED_SIZES: tuple[tuple[int, int], ...] = ((250, 250), (1280, 720), (1920, 1080))  # width, height
COMPREFACE_COUNT = re.compile(r"^compreface_\d+_(\d+)\.jpe?g$", re.IGNORECASE)
WIDER_GT = re.compile(r"^wider_face_(\w+)_bbx_gt\.txt$")

Kind = Literal["boxes", "count", "none", "centre"]
Detect = Callable[[np.ndarray], list[Detection]]


class AnnotationError(ValueError):
    """An annotation file that does not follow its format."""


@dataclass(frozen=True)
class Photo:
    path: Path
    boxes: np.ndarray | None = None  # (n, 4) x1, y1, x2, y2 for the "boxes" kind
    count: int = 0  # faces it holds, for the "count" kind


@dataclass(frozen=True)
class DetectionSet:
    name: str
    kind: Kind
    photos: tuple[Photo, ...]


@dataclass
class Tally:
    """Sums over a set's photos; ``exact`` counts photos whose face count came out right."""

    photos: int = 0
    truth: int = 0
    found: int = 0
    true_positives: int = 0
    exact: int = 0

    def add(self, other: Tally) -> None:
        self.photos += other.photos
        self.truth += other.truth
        self.found += other.found
        self.true_positives += other.true_positives
        self.exact += other.exact

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.found if self.found else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.truth if self.truth else None

    @property
    def false_per_photo(self) -> float:
        return (self.found - self.true_positives) / self.photos if self.photos else 0.0


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``first`` (n, 4) with every box of ``second`` (m, 4)."""
    a, b = first.reshape(-1, 4)[:, None, :], second.reshape(-1, 4)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def matched(truth: np.ndarray, found: np.ndarray, scores: Sequence[float], limit: float = IOU_MATCH) -> int:
    """Found boxes that match a true one at IoU >= ``limit``: PASCAL VOC's greedy rule, most
    confident detection first, each true box taken at most once."""
    if len(truth) == 0 or len(found) == 0:
        return 0
    overlaps = iou_matrix(found, truth)
    taken = np.zeros(len(truth), bool)
    hits = 0
    for row in np.argsort(-np.asarray(scores), kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[row])
        best = int(np.argmax(candidates))
        if candidates[best] >= limit:
            taken[best] = True
            hits += 1
    return hits


def covers_centre(box: np.ndarray, height: int, width: int) -> bool:
    return bool(box[0] <= width / 2 <= box[2] and box[1] <= height / 2 <= box[3])


def score_photo(kind: Kind, photo: Photo, faces: Sequence[Detection], height: int, width: int) -> Tally:
    found = len(faces)
    if kind == "boxes":
        assert photo.boxes is not None
        boxes = np.array([face.box for face in faces]).reshape(-1, 4)
        hits = matched(photo.boxes, boxes, [face.score for face in faces])
        truth = len(photo.boxes)
    elif kind == "count":
        # Without boxes, a face found beyond the known count is a false one, and up to it a true one.
        hits, truth = min(found, photo.count), photo.count
    elif kind == "none":
        hits, truth = 0, 0
    else:
        # Bystanders are real faces: on LFW only the named one is scored, so found counts it alone.
        hits = int(any(covers_centre(face.box, height, width) for face in faces))
        truth, found = 1, hits
    return Tally(photos=1, truth=truth, found=found, true_positives=hits, exact=int(found == truth))


def parse_dlib_xml(path: Path) -> dict[str, np.ndarray]:
    """dlib's imglab XML: file name -> (n, 4) boxes, ``ignore='1'`` boxes left out."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise AnnotationError(f"{path}: {error}") from error
    photos: dict[str, np.ndarray] = {}
    for image in root.iter("image"):
        boxes = []
        for box in image.iter("box"):
            if box.get("ignore") == "1":
                continue
            try:
                left, top = float(box.attrib["left"]), float(box.attrib["top"])
                width, height = float(box.attrib["width"]), float(box.attrib["height"])
            except (KeyError, ValueError) as error:
                raise AnnotationError(f"{path}: a box without numeric left/top/width/height") from error
            boxes.append((left, top, left + width, top + height))
        photos[image.attrib["file"]] = np.array(boxes, np.float64).reshape(-1, 4)
    return photos


def parse_wider(lines: Iterable[str]) -> dict[str, np.ndarray]:
    """WIDER FACE's ``*_bbx_gt.txt``: path, count, then one ``x y w h blur expression illumination
    invalid occlusion pose`` line per face (one line of zeros when the count is 0). Boxes flagged
    invalid are left out."""
    rows = iter(line.strip() for line in lines)
    photos: dict[str, np.ndarray] = {}
    for name in rows:
        if not name:
            continue
        try:
            count = int(next(rows))
            faces = [next(rows).split() for _ in range(max(count, 1))]
            values = [[float(v) for v in face[:8]] for face in faces[:count]]
        except (StopIteration, ValueError) as error:
            raise AnnotationError(f"{name}: a face count and that many box lines expected") from error
        if any(len(face) < 4 for face in values):
            raise AnnotationError(f"{name}: a box line with fewer than 4 numbers")
        boxes = [(x, y, x + w, y + h) for x, y, w, h, *flags in values if not (len(flags) >= 4 and flags[3])]
        photos[name] = np.array(boxes, np.float64).reshape(-1, 4)
    return photos


def wider_sets(root: Path) -> list[DetectionSet]:
    """One set per ``wider_face_split/wider_face_<split>_bbx_gt.txt`` whose photos are in
    ``WIDER_<split>/images``; photos not on disk are left out (a user may fetch val only)."""
    sets = []
    for gt in sorted((root / "wider_face_split").glob("*_bbx_gt.txt")):
        match = WIDER_GT.match(gt.name)
        if match is None:
            continue
        images = root / f"WIDER_{match.group(1)}" / "images"
        truth = parse_wider(gt.read_text().splitlines())
        photos = tuple(
            Photo(images / name, boxes=boxes) for name, boxes in truth.items() if (images / name).is_file()
        )
        if photos:
            sets.append(DetectionSet(f"WIDER {match.group(1)}", "boxes", photos))
    return sets


def compreface_count(name: str) -> int | None:
    match = COMPREFACE_COUNT.match(name)
    return int(match.group(1)) if match else None


def shared_sets(data: Path, lfw_limit: int | None) -> list[DetectionSet]:
    """The sets in ../shared/data; ``lfw_limit`` photos of each LFW folder, evenly spread (None: all)."""
    multi = data / "multi_face"
    boxes: dict[str, np.ndarray] = {}
    for xml in sorted(multi.glob("dlib_faces_*.xml")):
        boxes |= parse_dlib_xml(xml)
    dlib = tuple(Photo(multi / f"dlib_{name}", boxes=b) for name, b in sorted(boxes.items()))
    counted = tuple(
        Photo(path, count=count)
        for path in sorted(multi.glob("compreface_*"))
        if (count := compreface_count(path.name)) is not None
    )
    no_face = tuple(Photo(path) for path in sorted((data / "no_face").glob("*.jpg")))

    def lfw(folder: str) -> tuple[Photo, ...]:
        paths = sorted((data / folder).glob("*/*.jpg"))
        return tuple(Photo(path) for path in (evenly_spaced(paths, lfw_limit) if lfw_limit else paths))

    candidates = [
        DetectionSet("dlib PASCAL (boxes)", "boxes", dlib),
        DetectionSet("CompreFace groups (counts)", "count", counted),
        DetectionSet("no face", "none", no_face),
        DetectionSet("LFW original 150px (centre face)", "centre", lfw("lfw_original_150px")),
        DetectionSet("LFW dev 250px (centre face)", "centre", lfw("lfw_dev")),
    ]
    return [s for s in candidates if s.photos]


@dataclass(frozen=True)
class DetectorUnderTest:
    """A detector to benchmark, or why it cannot be (``detect`` None, ``note`` says why)."""

    name: str
    detect: Detect | None
    note: str = ""


@dataclass
class DetectorResult:
    name: str
    note: str
    sets: dict[str, Tally] = field(default_factory=dict)
    misses: dict[str, list[str]] = field(default_factory=dict)  # photos with a face not found, by set
    false: dict[str, list[str]] = field(default_factory=dict)  # photos with a false face, by set
    ms_at_size: dict[str, float] = field(default_factory=dict)  # "WxH" -> median ms


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def run_detectors(
    detectors: Sequence[DetectorUnderTest], sets: Sequence[DetectionSet]
) -> list[DetectorResult]:
    """Every available detector on every photo, one result per detector in ``detectors``' order.
    Each photo is decoded once for all detectors: decoding tens of thousands of photos is a large
    share of the run."""
    results = [DetectorResult(detector.name, detector.note) for detector in detectors]
    running = [(d.detect, r) for d, r in zip(detectors, results, strict=True) if d.detect is not None]
    if not running:
        return results
    for detection_set in sets:
        tallies = [Tally() for _ in running]
        for photo in detection_set.photos:
            pixels = read_rgb(photo.path)
            for (detect, result), tally in zip(running, tallies, strict=True):
                one = score_photo(detection_set.kind, photo, detect(pixels), *pixels.shape[:2])
                tally.add(one)
                if one.true_positives < one.truth:
                    result.misses.setdefault(detection_set.name, []).append(photo.path.name)
                if one.found > one.true_positives:
                    result.false.setdefault(detection_set.name, []).append(photo.path.name)
        for (_, result), tally in zip(running, tallies, strict=True):
            result.sets[detection_set.name] = tally
    return results


def time_detectors(
    detectors: Sequence[DetectorUnderTest],
    results: Sequence[DetectorResult],
    images: dict[str, np.ndarray],
    rounds: int,
) -> None:
    """Median ms per photo at each size into ``results``. Rounds alternate between detectors, so
    a shared machine's load changes weigh on every detector alike."""
    samples: dict[tuple[int, str], list[float]] = {}
    for round_ in range(rounds):
        for index, detector in enumerate(detectors):
            if detector.detect is None:
                continue
            for size, image in images.items():
                timing = time_calls(detector.detect, [image], warm_up=int(round_ == 0))
                samples.setdefault((index, size), []).extend(timing.seconds)
    for (index, size), seconds in samples.items():
        results[index].ms_at_size[size] = 1000.0 * float(np.median(seconds))


def speed_images(source: np.ndarray) -> dict[str, np.ndarray]:
    """One real photo resized to each benchmark size: detectors' cost follows pixels and faces."""
    return {
        f"{width}x{height}": cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA)
        for width, height in SPEED_SIZES
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: Sequence[DetectorResult], sets: Sequence[DetectionSet]) -> str:
    header = ["detector", *(s.name for s in sets), *(f"ms at {w}x{h}" for w, h in SPEED_SIZES), "note"]
    rows = []
    for result in results:
        cells = []
        for detection_set in sets:
            tally = result.sets.get(detection_set.name)
            if tally is None:
                cells.append("-")
            elif detection_set.kind == "none":
                cells.append(f"{tally.found} false ({tally.false_per_photo:.2f}/photo)")
            elif detection_set.kind == "centre":
                cells.append(f"R {_cell(tally.recall, 4)} ({tally.truth - tally.true_positives} missed)")
            else:
                cells.append(
                    f"P {_cell(tally.precision)} R {_cell(tally.recall)} ({tally.exact}/{tally.photos} exact)"
                )
        speeds = [
            f"{result.ms_at_size[f'{w}x{h}']:.1f}" if f"{w}x{h}" in result.ms_at_size else "-"
            for w, h in SPEED_SIZES
        ]
        rows.append([result.name, *cells, *speeds, result.note])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    legend = (
        f"P, R: precision and recall at IoU {IOU_MATCH} (boxes), or against the known count (counts); "
        "exact: photos whose face count is right. LFW: the named face is found when a box covers "
        "the photo's centre. Speed: median ms per photo, the same run."
    )
    return "\n".join(lines) + f"\n\n{legend}\n"


def to_json(results: Sequence[DetectorResult]) -> list[dict[str, Any]]:
    return [
        {
            "detector": result.name,
            "note": result.note,
            "sets": {
                name: {
                    "photos": tally.photos,
                    "faces": tally.truth,
                    "found": tally.found,
                    "true_positives": tally.true_positives,
                    "exact_counts": tally.exact,
                    "precision": tally.precision,
                    "recall": tally.recall,
                    "false_per_photo": tally.false_per_photo,
                }
                for name, tally in result.sets.items()
            },
            "missed": result.misses,
            "false_faces": result.false,
            "ms_at_size": result.ms_at_size,
        }
        for result in results
    ]


def benchmark(
    detectors: Sequence[DetectorUnderTest], sets: Sequence[DetectionSet], timing_rounds: int = 7
) -> list[DetectorResult]:
    """Every detector on every set, then their speeds on the first photo resized to each size."""
    first = next((s.photos[0].path for s in sets if s.photos), None)
    source = read_rgb(first) if first is not None else np.zeros((720, 1280, 3), np.uint8)
    results = run_detectors(detectors, sets)
    time_detectors(detectors, results, speed_images(source), timing_rounds)
    return results


@dataclass(frozen=True)
class DetectorChoice:
    """``name@threshold`` on the command line: a detector and the score it keeps faces from."""

    name: str
    threshold: float | None  # None: the detector's default

    @classmethod
    def parse(cls, text: str) -> DetectorChoice:
        name, _, threshold = text.partition("@")
        try:
            return cls(name, float(threshold) if threshold else None)
        except ValueError as error:
            raise ValueError(f"{text!r}: expected NAME or NAME@THRESHOLD") from error

    @property
    def label(self) -> str:
        return self.name if self.threshold is None else f"{self.name}@{self.threshold:g}"


# MTCNN at its published O-Net cut-off (before the fix), at the service's default, then the others.
DEFAULT_CHOICES = (
    DetectorChoice("mtcnn", MTCNN_PUBLISHED_THRESHOLD),
    DetectorChoice("mtcnn", None),
    DetectorChoice("yunet", None),
    DetectorChoice("scrfd", None),
)


def load_detector(
    choice: DetectorChoice, settings: EmbedderSettings, manifest: Manifest
) -> DetectorUnderTest:
    """The detector a choice names, through the service's registry, at the threshold the service
    would give it; or why it is not benchmarked (unknown, or its model not built)."""
    if choice.name not in DETECTOR_NAMES:
        return DetectorUnderTest(choice.label, None, f"unknown detector (known: {', '.join(DETECTOR_NAMES)})")
    try:
        detector = build_detector(
            choice.name, settings.models_dir, manifest, RuntimeOptions.from_settings(settings)
        )
    except DetectorMissingError as error:
        return DetectorUnderTest(choice.label, None, str(error))
    # The service's cut-off for this detector: EMBEDDER_DETECTION_THRESHOLD, else the detector's own.
    default = EmbedderSettings(detector=choice.name).detection_threshold
    threshold = default if choice.threshold is None else choice.threshold
    if choice.threshold is None:
        note = "the service's default for it"
    elif choice.name == "mtcnn" and threshold == MTCNN_PUBLISHED_THRESHOLD:
        note = "MTCNN's published O-Net cut-off"
    else:
        note = ""
    bound = _bound(detector, settings.min_face_size, threshold)
    return DetectorUnderTest(f"{choice.name}@{threshold:g}", bound, note)


def _bound(detector: FaceDetector, min_face_size: int, threshold: float) -> Detect:
    def detect(image: np.ndarray) -> list[Detection]:
        return list(detector.detect(image, min_face_size=min_face_size, threshold=threshold))

    return detect


def run(
    choices: Sequence[DetectorChoice],
    settings: EmbedderSettings,
    data: Path,
    lfw_limit: int | None,
    wider_dir: Path | None,
) -> tuple[list[DetectionSet], list[DetectorResult]]:
    """The whole benchmark: the sets in ``data`` (and a WIDER FACE layout), every detector chosen."""
    sets = shared_sets(data, lfw_limit) + (wider_sets(wider_dir) if wider_dir is not None else [])
    manifest = load_manifest(settings.models_dir)
    detectors = [load_detector(choice, settings, manifest) for choice in choices]
    return sets, benchmark(detectors, sets)
