"""Synthetic clips made of real face photos, and a detector stand-in that finds those photos.

The stand-in locates each known photo in the decoded frame by template matching, so tests drive
the real decode path and see real compression artefacts; it reports a face box, landmarks and a
noisy identity embedding for every photo it finds. Identity embeddings are 0.85 similar to one
another, as different people commonly are under the dlib ResNet, not orthogonal.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from search_service.domain import FaceObservation

PHOTO_SIDE = 150
CLIP_SIZE = (480, 270)  # width, height
CLIP_FPS = 10
BACKGROUND = 40

# LFW deep-funneled photos centre the face; these are its box and five landmarks (image-left eye,
# image-right eye, nose, mouth corners) as fractions of the photo side.
FACE_BOX_FRACTION = (0.3, 0.3, 0.7, 0.72)
LANDMARK_FRACTIONS = np.array([[0.4, 0.45], [0.6, 0.45], [0.5, 0.55], [0.42, 0.65], [0.58, 0.65]])

# identity, x, y: one photo placed with its top-left corner at (x, y)
Placement = tuple[str, int, int]
Schedule = Callable[[int], Sequence[Placement]]  # frame number -> photos in that frame


def face_box_at(x: float, y: float, scale: float = 1.0) -> tuple[float, float, float, float]:
    """The face box of a photo placed at (x, y), in pixels of an image scaled by ``scale``."""
    fx1, fy1, fx2, fy2 = FACE_BOX_FRACTION
    return (
        (x + fx1 * PHOTO_SIDE) * scale,
        (y + fy1 * PHOTO_SIDE) * scale,
        (x + fx2 * PHOTO_SIDE) * scale,
        (y + fy2 * PHOTO_SIDE) * scale,
    )


def write_clip(path: Path, photos: dict[str, np.ndarray], schedule: Schedule, seconds: float) -> Path:
    """An mp4v clip at CLIP_FPS (OpenCV cannot write H.264) showing the scheduled photos."""
    width, height = CLIP_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    assert writer.isOpened()
    for number in range(round(seconds * CLIP_FPS)):
        canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
        for identity, x, y in schedule(number):
            canvas[y : y + PHOTO_SIDE, x : x + PHOTO_SIDE] = photos[identity]
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def identity_embeddings(
    names: Sequence[str], dim: int = 128, similarity: float = 0.85
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    common = _unit(rng.standard_normal(dim))
    own = [_unit(rng.standard_normal(dim)) for _ in names]
    # Each identity = shared direction + its own: pairwise cosine close to `similarity`.
    a, b = np.sqrt(similarity), np.sqrt(1 - similarity)
    return {name: _unit(a * common + b * vec) for name, vec in zip(names, own, strict=True)}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class TemplateFaceDetector:
    """Callable like the embedder client: a batch of RGB frames -> faces per frame."""

    photos: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    noise: float = 0.2  # embedding noise: same-identity cosine ~0.96 between observations
    min_correlation: float = 0.7
    batches: list[int] = field(default_factory=list)  # frames per call
    frame_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def __call__(self, frames: list[np.ndarray]) -> list[list[FaceObservation]]:
        self.batches.append(len(frames))
        return [self._detect(frame) for frame in frames]

    def _detect(self, frame: np.ndarray) -> list[FaceObservation]:
        self.frame_shapes.append(frame.shape)
        scale = frame.shape[1] / CLIP_SIZE[0]
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        # Noise seeded by the pixels: a frame gets the same faces whatever thread or order it comes in.
        rng = np.random.default_rng(zlib.crc32(frame.tobytes()))
        faces = []
        for identity, photo in self.photos.items():
            side = round(PHOTO_SIDE * scale)
            template = cv2.resize(
                cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), (side, side), interpolation=cv2.INTER_AREA
            )
            scores = cv2.matchTemplate(gray, template, cv2.TM_CCOEFF_NORMED)
            _, best, _, (x, y) = cv2.minMaxLoc(scores)
            if best < self.min_correlation:
                continue
            x1, y1, x2, y2 = face_box_at(x / scale, y / scale, scale)
            landmarks = (np.array([x, y]) + LANDMARK_FRACTIONS * side).astype(np.float32)
            noisy = self.embeddings[identity] + self.noise * rng.standard_normal(128) / np.sqrt(128)
            faces.append(FaceObservation((x1, y1, x2, y2), float(best), landmarks, _unit(noisy)))
        return faces


@pytest.fixture(scope="session")
def face_photos(shared_data: Path) -> dict[str, np.ndarray]:
    """Two real people from LFW, resized to PHOTO_SIDE, RGB."""
    paths = {
        "A": shared_data / "lfw_dev" / "George_W_Bush" / "George_W_Bush_0353.jpg",
        "B": shared_data / "lfw_dev" / "Colin_Powell" / "Colin_Powell_0038.jpg",
    }
    photos = {}
    for name, path in paths.items():
        bgr = cv2.imread(str(path))
        assert bgr is not None, path
        photos[name] = cv2.cvtColor(cv2.resize(bgr, (PHOTO_SIDE, PHOTO_SIDE)), cv2.COLOR_BGR2RGB)
    return photos


@pytest.fixture
def detector(face_photos: dict[str, np.ndarray]) -> TemplateFaceDetector:
    return TemplateFaceDetector(face_photos, identity_embeddings(sorted(face_photos)))


def a_b_a_schedule(number: int) -> list[Placement]:
    """A 0-2 s sliding right, blank 2-3 s, B 3-5 s, A again 5-6 s at another place."""
    t = number / CLIP_FPS
    if t < 2:
        return [("A", 40 + number * 2, 60)]
    if 3 <= t < 5:
        return [("B", 280, 80)]
    if t >= 5:
        return [("A", 200, 40)]
    return []


@pytest.fixture(scope="session")
def a_b_a_clip(face_photos: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "a_b_a.mp4"
    return write_clip(path, face_photos, a_b_a_schedule, seconds=6)
