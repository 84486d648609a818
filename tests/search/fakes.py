"""A fake embedder and synthetic photos, for fast unit tests of the search service's own logic.

The fake speaks the embedder's HTTP contract (``POST /faces``, ``GET /models``, ``GET /healthz``)
but detects nothing: each test photo is a small PNG whose text chunk ``faces`` names the people
in it, and every person has a fixed random unit vector, perturbed a little per photo, so that two
photos of one person score ~0.96 and photos of different people ~0. Video frames arrive as JPEG
without that chunk: there a person is a square of their colour (``MARKERS``), found wherever it
is. Real-model end-to-end tests live in ``tests/e2e``.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from search_service.domain import DetectedFace, DetectedImage, NewImage, Upload

DIMENSION = 128
MODEL = "fake-embedder-v1"
# The threshold the fake's model is calibrated for: photos of one person score ~0.96, others ~0.
MATCH_THRESHOLD = 0.9
# Per-photo perturbation: cosine between two photos of one person is about 1 / (1 + NOISE**2).
NOISE = 0.2


def photo(*people: str, variant: int = 0, size: tuple[int, int] = (48, 48)) -> bytes:
    """PNG bytes showing ``people`` (as far as the fake is concerned); ``variant`` changes the bytes."""
    seed = int.from_bytes(hashlib.sha256(f"{people}/{variant}".encode()).digest()[:8], "little")
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("faces", ",".join(people))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _unit(seed_text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(DIMENSION)
    return vector / np.linalg.norm(vector)


def face_vector(person: str, photo_bytes: bytes, index: int) -> np.ndarray:
    """The embedding the fake returns for face ``index`` (one of ``person``) of a photo."""
    noise = _unit(f"{hashlib.sha256(photo_bytes).hexdigest()}/{index}")
    vector = _unit(person) + NOISE * noise
    return (vector / np.linalg.norm(vector)).astype(np.float32)


# Synthetic clips show each person as a square of one of these colours (RGB).
MARKERS: dict[str, tuple[int, int, int]] = {
    "alice": (230, 40, 40),
    "bob": (40, 200, 40),
    "carol": (40, 60, 230),
}
# Per channel, far enough from the colour to miss compression artefacts at the square's edges.
_MARKER_TOLERANCE = 60
_MARKER_MIN_PIXELS = 64


def marker_faces(image: Image.Image, data: bytes) -> list[dict[str, object]]:
    """The embedder's answer for the coloured squares in a frame: box, landmarks, embedding."""
    rgb = np.asarray(image.convert("RGB"), np.int16)
    faces: list[dict[str, object]] = []
    for name, colour in MARKERS.items():
        ys, xs = np.nonzero(np.abs(rgb - np.asarray(colour, np.int16)).max(axis=2) < _MARKER_TOLERANCE)
        if len(xs) < _MARKER_MIN_PIXELS:
            continue
        x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        w, h = x2 - x1, y2 - y1
        points = [(0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75)]
        faces.append(
            {
                "box": [x1, y1, x2, y2],
                "score": 0.99,
                "landmarks": [[x1 + fx * w, y1 + fy * h] for fx, fy in points],
                "embedding": face_vector(name, data, len(faces)).tolist(),
            }
        )
    return faces


def _json(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, content_type="application/json")


def _declared_size(data: bytes) -> tuple[int, int]:
    """Width and height as the photo's header declares them; (0, 0) when it names none.

    PNG's is read here: Pillow's own bomb guard would refuse to report a huge one (the real embedder
    lifts that guard, which this test process must not do: the search service shares it)."""
    if len(data) >= 24 and data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return 0, 0


@dataclass
class FakeEmbedder:
    """The embedder's HTTP contract, with knobs for the ways a real embedder can answer."""

    server: HTTPServer
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before behaving
    retry_after: str | None = None  # the Retry-After header of those answers, when set
    # Out of order: every POST /faces answers 500 (a request that reaches it fails at once: a 502).
    failing: bool = False
    model: str = MODEL
    # The dimension its answers declare; the embeddings it sends are always DIMENSION long.
    declared_dimension: int = DIMENSION
    match_threshold: float = MATCH_THRESHOLD
    # Its model's AS-norm threshold; None: not calibrated (searches then rank by cosine).
    normalized_threshold: float | None = None
    # Like the real embedder's EMBEDDER_MAX_IMAGES_PER_REQUEST: more photos in one call are a 413.
    max_images_per_request: int = 64
    # Like the real embedder's EMBEDDER_MAX_IMAGE_PIXELS: a larger photo is a 413, judged from its header.
    max_pixels: int = 40_000_000
    delay_s: float = 0.0  # per POST /faces call, to stretch a bulk ingest in time
    # The query parameters of each answered POST /faces: what the service asked the detector for
    # (min_face_size, threshold, embeddings, landmarks) is part of the wire contract.
    params: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request("/faces", method="POST").respond_with_handler(self._faces)
        self.server.expect_request("/models").respond_with_handler(
            lambda _: _json(
                {
                    "embedding_model": self.model,
                    "embedding_dimension": self.declared_dimension,
                    "match_threshold": self.match_threshold,
                    "normalized_threshold": self.normalized_threshold,
                    "models": [],
                }
            )
        )
        self.server.expect_request("/healthz").respond_with_json({"status": "ok"})

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def _faces(self, request: Request) -> Response:
        if self.fail_next:
            status = self.fail_next.pop(0)
            answer = _json({"detail": f"answering {status} as told"}, status)
            if self.retry_after is not None:
                answer.headers["Retry-After"] = self.retry_after
            return answer
        if self.failing:
            return _json({"detail": "the fake embedder is out of order"}, 500)
        uploads = request.files.getlist("image")
        if len(uploads) > self.max_images_per_request:
            limit = self.max_images_per_request
            return _json({"detail": f"{len(uploads)} images in one request; the limit is {limit}"}, 413)
        self.params.append(dict(request.args))
        time.sleep(self.delay_s)
        images = []
        for upload in uploads:
            data = upload.read()
            width, height = _declared_size(data)
            if width * height > self.max_pixels:  # the real embedder's check and words
                message = f"image too large: {width}x{height} = {width * height} pixels, the limit is "
                return _json({"detail": f"{message}{self.max_pixels}"}, 413)
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except UnidentifiedImageError:
                return _json({"detail": "cannot identify image file"}, 415)
            except (OSError, SyntaxError, ValueError) as error:  # as the real embedder: a 400
                return _json({"detail": f"cannot decode image: {error}"}, 400)
            if image.format == "JPEG":
                faces = marker_faces(image, data)
            else:
                people = [name for name in str(image.info.get("faces", "")).split(",") if name]
                faces = [
                    {
                        "box": [2.0 + 10 * i, 2.0, 10.0 + 10 * i, 12.0],
                        "score": 0.99,
                        "landmarks": [[4.0 + 10 * i, 5.0]] * 5,
                        "embedding": face_vector(name, data, i).tolist(),
                    }
                    for i, name in enumerate(people)
                ]
            images.append({"width": image.width, "height": image.height, "faces": faces})
        return _json(
            {
                "model": self.model,
                "dimension": self.declared_dimension,
                "match_threshold": self.match_threshold,
                "normalized_threshold": self.normalized_threshold,
                "images": images,
            }
        )


def new_image(
    data: bytes,
    *,
    collection: str = "main",
    people: tuple[str, ...] = ("alice",),
    external_id: str | None = None,
) -> NewImage:
    """What the images service hands the store for ``data``, as the fake embedder would see it."""
    upload = Upload(
        filename="photo.png", data=data, sha256=hashlib.sha256(data).hexdigest(), content_type="image/png"
    )
    faces = [
        DetectedFace((1.0 + i, 2.0, 30.0 + i, 40.0), 0.98, [[5.0, 6.0]] * 5, face_vector(name, data, i))
        for i, name in enumerate(people)
    ]
    return NewImage(upload, collection, external_id, {"source": "test"}, DetectedImage(48, 48, faces))


if __name__ == "__main__":
    # `python -m tests.search.fakes`: the fake in a process of its own, for tests that stop it with
    # SIGSTOP as an embedder hangs. It prints its URL, then serves until it is killed.
    server = HTTPServer(host="127.0.0.1", threaded=True)
    FakeEmbedder(server)
    server.start()
    print(server.url_for("").rstrip("/"), flush=True)
    threading.Event().wait()
