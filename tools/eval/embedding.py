"""Photos to embeddings, for our pipeline variants, with an on-disk cache.

A full LFW pass takes minutes per pipeline; the cache (one ``.npz`` per variant and model
checksum under ``reports/cache/``) makes reruns take seconds and invalidates itself when
the models are rebuilt, because the checksum is part of the file name.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, get_args

import numpy as np
from tqdm import tqdm

from embedder_service.imaging import decode_image
from embedder_service.models.aligner import AlignmentMode
from embedder_service.models.manifest import load_manifest
from embedder_service.models.pipeline import DetectionOptions, FacePipeline
from embedder_service.service import build_pipeline
from embedder_service.settings import EmbedderSettings
from facesearch_common.files import atomic_writer

# Cache writes during a long pass, so an interrupted run resumes instead of restarting.
SAVE_EVERY = 250


@dataclass(frozen=True)
class Variant:
    alignment: AlignmentMode
    flip: bool

    @property
    def name(self) -> str:
        return self.alignment + ("+flip" if self.flip else "")

    @classmethod
    def parse(cls, name: str) -> Variant:
        alignment, _, flip = name.partition("+")
        if alignment not in get_args(AlignmentMode) or flip not in ("", "flip"):
            known = ", ".join(variant.name for variant in ALL_VARIANTS)
            raise ValueError(f"unknown variant {name!r} (known: {known})")
        return cls(alignment, flip == "flip")  # type: ignore[arg-type]  # checked just above


ALL_VARIANTS = tuple(Variant(a, f) for a in get_args(AlignmentMode) for f in (False, True))


class PhotoEmbedder(Protocol):
    """A whole photo-to-embedding pipeline that may produce several variants of one photo."""

    names: tuple[str, ...]
    dimension: int

    def cache_tag(self) -> str:
        """Changes whenever the models change, so stale cached embeddings are never read."""
        ...

    def embed(self, path: Path, names: Sequence[str]) -> dict[str, np.ndarray | None]:
        """One unit-length embedding per requested variant, None where no face was found."""
        ...


def centre_face(boxes: Sequence[np.ndarray], height: int, width: int) -> int | None:
    """Index of the box whose centre is nearest the image centre.

    LFW photos are cropped around the named person, but many show other people too; the
    largest or most confident face is sometimes a bystander's.
    """
    if not boxes:
        return None
    centres = np.array([((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) for box in boxes])
    return int(np.argmin(np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)))


class OurPipeline:
    """MTCNN -> alignment -> dlib ResNet (ONNX), as the embedder service runs it, per variant.

    Detection does not depend on the variant, so each photo is decoded and detected once and
    only the alignment and embedding are repeated per variant.
    """

    def __init__(self, variants: Sequence[Variant], settings: EmbedderSettings | None = None) -> None:
        self.settings = settings or EmbedderSettings()
        manifest = load_manifest(self.settings.models_dir)
        self.pipelines: dict[str, FacePipeline] = {
            variant.name: build_pipeline(
                self.settings.model_copy(
                    update={"alignment": variant.alignment, "flip_augment": variant.flip}
                ),
                manifest,
            )
            for variant in variants
        }
        self.names = tuple(self.pipelines)
        first = next(iter(self.pipelines.values()))
        self.dimension = first.encoder.spec.dimension
        self._detector = first
        self._options = DetectionOptions.from_settings(self.settings)
        digest = hashlib.sha256()
        for record in sorted(manifest.models, key=lambda record: record.file):
            digest.update(record.sha256.encode())
        self._tag = digest.hexdigest()[:16]

    def cache_tag(self) -> str:
        return self._tag

    def embed(self, path: Path, names: Sequence[str]) -> dict[str, np.ndarray | None]:
        image = decode_image(path.read_bytes(), self.settings.max_image_pixels)
        detections = self._detector.detect(image, self._options)
        chosen = centre_face([face.box for face in detections], image.shape[0], image.shape[1])
        if chosen is None:
            return dict.fromkeys(names)
        face = [[detections[chosen]]]
        return {name: self.pipelines[name].embed([image], face)[0][0] for name in names}


def _cache_file(directory: Path, name: str, tag: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return directory / f"{safe}-{tag}.npz"


class EmbeddingCache:
    """Embeddings of one variant and model checksum, keyed by the photo's absolute path."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.path = path
        self.dimension = dimension
        self._entries: dict[str, np.ndarray | None] = {}
        self._dirty = False
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                for key, found, vector in zip(
                    stored["keys"], stored["found"], stored["vectors"], strict=True
                ):
                    self._entries[str(key)] = vector if found else None

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> np.ndarray | None:
        return self._entries[key]

    def put(self, key: str, vector: np.ndarray | None) -> None:
        self._entries[key] = vector
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        keys = list(self._entries)
        vectors = np.zeros((len(keys), self.dimension), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        for row, key in enumerate(keys):
            vector = self._entries[key]
            if vector is not None:
                vectors[row], found[row] = vector, True
        with atomic_writer(self.path) as handle:
            np.savez(handle, keys=np.array(keys, dtype=str), found=found, vectors=vectors)
        self._dirty = False


@dataclass
class EmbeddingTable:
    """One variant's embeddings of a set of photos; rows of photos without a face are zero."""

    rows: dict[str, int]  # absolute photo path -> row
    vectors: np.ndarray
    found: np.ndarray

    def select(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        index = np.array([self.rows[key] for key in keys], dtype=np.int64)
        return self.vectors[index], self.found[index]

    def pair_scores(self, pairs: Iterable[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity per pair, and whether both photos had a face.

        A pair with a photo where no face was found scores -1, the lowest cosine there is, so
        it is called "different" at any threshold: the failure costs a same-person pair and
        never helps.
        """
        first, second = zip(*pairs, strict=True)
        a, found_a = self.select(first)
        b, found_b = self.select(second)
        both = found_a & found_b
        return np.where(both, np.einsum("ij,ij->i", a, b), -1.0), both

    @property
    def failures(self) -> int:
        return int(np.count_nonzero(~self.found))


def embed_photos(
    embedder: PhotoEmbedder, paths: Sequence[Path], cache_dir: Path, label: str
) -> dict[str, EmbeddingTable]:
    """Every photo through every variant of ``embedder``; cached results are reused."""
    caches = {
        name: EmbeddingCache(_cache_file(cache_dir, name, embedder.cache_tag()), embedder.dimension)
        for name in embedder.names
    }
    keys = [str(path.resolve()) for path in paths]
    todo = [
        (path, key)
        for path, key in zip(paths, keys, strict=True)
        if any(key not in c for c in caches.values())
    ]
    try:
        for done, (path, key) in enumerate(tqdm(todo, desc=f"embedding ({label})", unit="photo"), start=1):
            wanted = [name for name, cache in caches.items() if key not in cache]
            for name, vector in embedder.embed(path, wanted).items():
                caches[name].put(key, vector)
            if done % SAVE_EVERY == 0:
                for cache in caches.values():
                    cache.save()
    finally:
        for cache in caches.values():
            cache.save()
    rows = {key: row for row, key in enumerate(dict.fromkeys(keys))}
    tables = {}
    for name, cache in caches.items():
        vectors = np.zeros((len(rows), embedder.dimension), dtype=np.float32)
        found = np.zeros(len(rows), dtype=bool)
        for key, row in rows.items():
            vector = cache.get(key)
            if vector is not None:
                vectors[row], found[row] = vector, True
        tables[name] = EmbeddingTable(rows, vectors, found)
    return tables


def milliseconds_per_photo(
    embedders: Sequence[PhotoEmbedder], paths: Sequence[Path], warm_up: int = 2
) -> dict[str, float]:
    """Median wall time of one photo through each whole pipeline (read, decode, detect, embed).

    Not taken from the embedding pass, which may have been served from the cache. Pipelines
    take turns on each photo, so load from other processes on a shared machine falls on
    all of them alike and their ratio stays fair. The first photos warm up sessions and
    memory pools and are not counted.
    """
    runs = [(embedder, name) for embedder in embedders for name in embedder.names]
    times: dict[str, list[float]] = {name: [] for _, name in runs}
    for count, path in enumerate(tqdm(paths, desc="timing", unit="photo")):
        for embedder, name in runs:
            started = time.perf_counter()
            embedder.embed(path, [name])
            if count >= warm_up:
                times[name].append(time.perf_counter() - started)
    return {name: 1000.0 * float(np.median(values)) for name, values in times.items() if values}
