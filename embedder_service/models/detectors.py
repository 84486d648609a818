"""The face detectors by name (``EMBEDDER_DETECTOR``): each one module, its file in the manifest."""

from __future__ import annotations

from pathlib import Path

import structlog

from embedder_service.models.detector import MtcnnDetector
from embedder_service.models.manifest import Manifest
from embedder_service.models.pipeline import FaceDetector
from embedder_service.models.scrfd import ScrfdDetector
from embedder_service.models.session import RuntimeOptions
from embedder_service.models.single_shot import SingleShotDetector
from embedder_service.models.yunet import YunetDetector

SINGLE_SHOT: dict[str, type[SingleShotDetector]] = {"yunet": YunetDetector, "scrfd": ScrfdDetector}
DETECTOR_NAMES = ("mtcnn", *SINGLE_SHOT)

log = structlog.get_logger(__name__)


class DetectorMissingError(LookupError):
    """A detector the settings name that ``make models`` did not build."""


def build_detector(name: str, models_dir: Path, manifest: Manifest, runtime: RuntimeOptions) -> FaceDetector:
    """The detector called ``name``, on the models ``manifest`` lists in ``models_dir``."""
    if name == "mtcnn":
        return MtcnnDetector(models_dir, runtime)
    if name not in SINGLE_SHOT:
        raise DetectorMissingError(f"unknown detector {name!r} (known: {', '.join(DETECTOR_NAMES)})")
    record = manifest.named(name)
    if record is None:
        raise DetectorMissingError(
            f"detector {name!r} is not in the model manifest: build it with `make models DETECTORS={name}`"
        )
    # Stated where a detector is enabled: SCRFD's weights are for non-commercial research only.
    log.warning("face detector enabled", detector=name, file=record.file, licence=record.licence)
    return SINGLE_SHOT[name](models_dir / record.file, runtime)
