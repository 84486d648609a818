"""Video frames to face observations, through the embedder: the pipeline's ``detect_and_embed``."""

from __future__ import annotations

import asyncio
import hashlib
import math

import numpy as np

from search_service.domain import DetectedFace, FaceObservation, ModelThresholds, Upload
from search_service.services.faces import DetectsFaces
from search_service.settings import VideoSettings
from search_service.video.jpeg import encode_jpeg


def _observation(face: DetectedFace) -> FaceObservation:
    landmarks = None if face.landmarks is None else np.asarray(face.landmarks, np.float64)
    return FaceObservation(box=face.box, score=face.score, landmarks=landmarks, embedding=face.embedding)


def min_face_size(side: int, settings: VideoSettings) -> int:
    """The smallest face asked for in frames ``side`` pixels long.

    MTCNN's cost follows the first level of its pyramid (12 / min_face_size): a frame of side S is
    detected as if it were detect_side large by asking for proportionally larger faces.
    """
    smallest = settings.min_face_size
    return max(smallest, math.ceil(smallest * side / settings.detect_side))


class FrameEmbedder:
    """Called from a worker thread: frames go to the embedder as JPEG through the async client
    on ``loop``; the faces come back as tracker observations in the frames' pixels."""

    def __init__(
        self, detector: DetectsFaces, loop: asyncio.AbstractEventLoop, settings: VideoSettings
    ) -> None:
        self._detector = detector
        self._loop = loop
        self._settings = settings

    def __call__(self, frames: list[np.ndarray]) -> list[list[FaceObservation]]:
        return self.embed(frames)[0]

    def embed(self, frames: list[np.ndarray]) -> tuple[list[list[FaceObservation]], ModelThresholds]:
        """The faces per frame, and the match thresholds calibrated for the model that embedded them."""
        uploads = [self._upload(number, frame) for number, frame in enumerate(frames)]
        side = max(max(frame.shape[:2]) for frame in frames)
        min_face = min_face_size(side, self._settings)
        detection = asyncio.run_coroutine_threadsafe(
            self._detector.detect(
                uploads, min_face_size=min_face, threshold=self._settings.detection_threshold
            ),
            self._loop,
        ).result()
        faces = [[_observation(face) for face in image.faces] for image in detection.images]
        return faces, detection.thresholds

    def _upload(self, number: int, frame_rgb: np.ndarray) -> Upload:
        data = encode_jpeg(frame_rgb, self._settings.jpeg_quality)
        return Upload(f"frame{number}.jpg", data, hashlib.sha256(data).hexdigest(), "image/jpeg")
