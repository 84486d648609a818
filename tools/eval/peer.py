"""The peer pipeline: ``face_recognition`` (dlib HOG detector, dlib 5-point landmarks and chip,
the same dlib ResNet descriptor we export to ONNX).

It is installed for the benchmark only (docs/decisions/benchmarks.md):
``pip install dlib-bin face_recognition_models click "setuptools<81"`` then
``pip install --no-deps face_recognition``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from tools.eval.embedding import centre_face

NAME = "face_recognition"
INSTALL_HINT = (
    'pip install dlib-bin face_recognition_models click "setuptools<81" && '
    "pip install --no-deps face_recognition"
)


def _import_peer() -> ModuleType:
    # face_recognition calls quit() when face_recognition_models is missing, which would end
    # this process: import the models package first, where a failure is an ordinary exception.
    importlib.import_module("face_recognition_models")
    return importlib.import_module("face_recognition")


class PeerPipeline:
    names: tuple[str, ...] = (NAME,)
    dimension = 128

    def __init__(self) -> None:
        self._api = _import_peer()
        models = importlib.import_module("face_recognition_models")
        digest = hashlib.sha256(importlib.metadata.version("dlib-bin").encode())
        for location in (
            models.face_recognition_model_location(),
            models.pose_predictor_five_point_model_location(),
        ):
            digest.update(Path(location).read_bytes())
        self._tag = digest.hexdigest()[:16]

    @classmethod
    def load(cls) -> PeerPipeline | str:
        """The peer, or why it cannot run here."""
        try:
            return cls()
        except (ImportError, importlib.metadata.PackageNotFoundError) as error:
            return f"{error} (install with: {INSTALL_HINT})"

    def cache_tag(self) -> str:
        return self._tag

    def embed(self, path: Path, names: Sequence[str]) -> dict[str, np.ndarray | None]:
        """face_recognition's defaults: HOG with one upsampling, 5-point landmarks, one jitter."""
        image = self._api.load_image_file(str(path))
        locations = self._api.face_locations(image, model="hog")
        # (top, right, bottom, left) -> (x1, y1, x2, y2)
        boxes = [
            np.array([left, top, right, bottom], dtype=np.float64) for top, right, bottom, left in locations
        ]
        chosen = centre_face(boxes, image.shape[0], image.shape[1])
        if chosen is None:
            return dict.fromkeys(names)
        (raw,) = self._api.face_encodings(image, [locations[chosen]], num_jitters=1, model="small")
        # dlib's descriptors are not unit length; cosine similarity, like ours, needs them to be.
        vector = np.asarray(raw, dtype=np.float32)
        return dict.fromkeys(names, vector / max(float(np.linalg.norm(vector)), 1e-12))
