"""The whole face pipeline: detect -> align -> embed, batched across faces and images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from embedder_service.models.aligner import FaceAligner
from embedder_service.models.detection import Detection, DetectionOptions, FaceDetector, split_rows
from embedder_service.models.encoder import FaceEncoder
from embedder_service.telemetry import DOWNSCALED_DETECTIONS, MODEL_SECONDS

# A blank photo has no faces whatever the options: warming up only opens the sessions and runs each net.
WARM_UP_OPTIONS = DetectionOptions(min_face_size=20, threshold=0.5)


@dataclass(frozen=True)
class DetectionInput:
    """The pixels detection runs on for one photo (the photo itself or a smaller copy), the
    smallest face to find in them, the photo's (height, width), and what the detector answered
    its detection costs (:meth:`FaceDetector.work`)."""

    pixels: np.ndarray
    min_face_size: int
    photo_size: tuple[int, int]
    work: int


@dataclass
class Face:
    detection: Detection
    embedding: np.ndarray | None


class FacePipeline:
    """Detects on at most ``detect_max_side`` pixels a side, or the detector's own ``max_side``
    when shorter (None, both: on the photo as it is); aligns and embeds from the full-resolution photo."""

    def __init__(
        self,
        detector: FaceDetector,
        aligner: FaceAligner,
        encoder: FaceEncoder,
        flip_augment: bool,
        detect_max_side: int | None = None,
    ) -> None:
        self.detector = detector
        self.aligner = aligner
        self.encoder = encoder
        self.flip_augment = flip_augment
        self.detect_max_side = detect_max_side

    def detect(self, image: np.ndarray, options: DetectionOptions) -> list[Detection]:
        """Faces of ``image``, with boxes and landmarks in its own pixels."""
        return self.detect_inputs([self.detection_input(image, options)], [options])[0]

    def detection_input(self, image: np.ndarray, options: DetectionOptions) -> DetectionInput:
        """What detection runs on: the photo, or a copy of it as long as the shorter of
        ``detect_max_side`` and the detector's ``max_side``.

        A photo longer than that is detected on a copy area-resized to that length: MTCNN's
        cost and memory follow the pixels it sees, and a single-shot detector would shrink it
        to its ``max_side`` itself, a second resize. ``min_face_size`` stays in the photo's
        pixels, except that it never falls under the detector's smallest face in the copy
        (P-Net's 12 px window), since that would upsample the copy back: on a copy ``factor``
        times the photo's size, the smallest face found is max(min_face_size, smallest_face /
        factor) photo pixels.
        """
        height, width = image.shape[:2]
        longest = max(height, width)
        detector = self.detector
        sides = [side for side in (self.detect_max_side, detector.max_side) if side is not None]
        if not sides or longest <= min(sides):
            work = detector.work(height, width, options.min_face_size)
            return DetectionInput(image, options.min_face_size, (height, width), work)
        factor = min(sides) / longest
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        copy = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        DOWNSCALED_DETECTIONS.inc()
        min_face_size = max(detector.smallest_face, round(options.min_face_size * factor))
        work = detector.work(size[1], size[0], min_face_size)
        return DetectionInput(copy, min_face_size, (height, width), work)

    def detect_inputs(
        self, prepared: Sequence[DetectionInput], options: Sequence[DetectionOptions]
    ) -> list[list[Detection]]:
        """Faces of several photos as :meth:`detection_input` prepared them (boxes in each photo's
        pixels), each with its own options, in the detector's shared runs: what one batched
        detection run of the scheduler does."""
        started = time.perf_counter()
        found = self.detector.detect_batch(
            [one.pixels for one in prepared],
            [
                DetectionOptions(one.min_face_size, opts.threshold, opts.max_faces)
                for one, opts in zip(prepared, options, strict=True)
            ],
        )
        MODEL_SECONDS.labels("detector").observe(time.perf_counter() - started)
        return [_in_photo(one, detections) for one, detections in zip(prepared, found, strict=True)]

    def warm_up(self) -> None:
        """Opens every session and runs each model: with shape buckets, once on every shape it
        will run on, so that serving searches no algorithm and allocates no new buffers; without,
        once on a small blank photo and once on one chip."""
        if self.encoder.runtime.buckets:
            for entry in [*self.detector.shape_buckets(), *self.encoder.shape_buckets()]:
                for shape in entry.shapes:
                    entry.model.run(np.zeros(shape, np.float32))
            return
        self.detect(np.zeros((160, 160, 3), np.uint8), WARM_UP_OPTIONS)
        size = self.encoder.spec.input_size
        self.encoder.embed(np.zeros((1, size, size, 3), np.uint8))

    def align(self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]) -> np.ndarray:
        """The chips of every face of every image, in order: N x size x size x 3."""
        chips = [
            self.aligner.align(image, face.landmarks)
            for image, faces in zip(images, detections, strict=True)
            for face in faces
        ]
        if not chips:
            size = self.aligner.chip_size
            return np.zeros((0, size, size, 3), np.uint8)
        return np.stack(chips)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of aligned chips, N x dimension."""
        started = time.perf_counter()
        vectors = self.encoder.embed(chips, flip_augment=self.flip_augment)
        MODEL_SECONDS.labels("encoder").observe(time.perf_counter() - started)
        return vectors

    def embed(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[np.ndarray]:
        """Embeds every face of every image in one batched model run; one array per image."""
        return split_per_image(self.embed_chips(self.align(images, detections)), detections)

    def analyze(
        self, images: Sequence[np.ndarray], options: DetectionOptions, with_embeddings: bool = True
    ) -> list[list[Face]]:
        prepared = [self.detection_input(image, options) for image in images]
        detections = self.detect_inputs(prepared, [options] * len(images))
        return faces_of(detections, self.embed(images, detections) if with_embeddings else None)


def split_per_image(vectors: np.ndarray, detections: Sequence[Sequence[Detection]]) -> list[np.ndarray]:
    """Consecutive rows of ``vectors``, one block per image, as many as it has faces."""
    return split_rows(vectors, [len(faces) for faces in detections])


def faces_of(
    detections: Sequence[Sequence[Detection]], vectors: Sequence[np.ndarray] | None
) -> list[list[Face]]:
    """Each image's detections with their embeddings (``None``: detections only)."""
    if vectors is None:
        return [[Face(face, None) for face in faces] for faces in detections]
    return [
        [Face(face, vector) for face, vector in zip(faces, image_vectors, strict=True)]
        for faces, image_vectors in zip(detections, vectors, strict=True)
    ]


def _in_photo(prepared: DetectionInput, detections: list[Detection]) -> list[Detection]:
    """Detections on what :meth:`FacePipeline.detection_input` prepared, in the photo's pixels."""
    (height, width), (seen_height, seen_width) = prepared.photo_size, prepared.pixels.shape[:2]
    if (height, width) == (seen_height, seen_width):
        return detections
    return [_scaled(face, width / seen_width, height / seen_height) for face in detections]


def _scaled(face: Detection, x_factor: float, y_factor: float) -> Detection:
    """A detection on a resized copy, in the photo's pixels: cv2.resize maps pixel centres,
    so a copy coordinate c is the photo's (c + 0.5) * factor - 0.5."""
    factors = np.array([x_factor, y_factor])
    box = (face.box.reshape(2, 2) + 0.5) * factors - 0.5
    landmarks = (face.landmarks + 0.5) * factors - 0.5
    return Detection(box=box.reshape(4), score=face.score, landmarks=landmarks)
