"""``python -m embedder_service.build``: writes the ONNX models and their manifest.

The weights come from registry packages installed with ``--no-deps`` (see the Makefile):
facenet-pytorch's MTCNN nets and face_recognition_models' dlib ResNet. Only numpy and
onnx are needed; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import onnx

from embedder_service.build import facenet
from embedder_service.build.detectors import SOURCES, DetectorSource, SourceError, fetch
from embedder_service.build.dlib_resnet import (
    INPUT_MEAN,
    INPUT_SCALE,
    INPUT_SIZE,
    build_dlib_resnet,
    locate_dlib_weights,
)
from embedder_service.build.mtcnn_nets import WEIGHTS_OF, build_mtcnn_nets, locate_mtcnn_weights
from embedder_service.build.sources import default_cache_dir
from embedder_service.models.encoder import EncoderSpec
from embedder_service.models.manifest import MANIFEST_NAME, Manifest, ModelRecord, Task, sha256_of
from facesearch_common.files import atomic_writer

# MTCNN's landmarks mapped where dlib's own chips put them (docs/decisions/embedder.md).
DLIB_CHIP_TEMPLATE = [(47.74, 45.37), (101.23, 44.99), (74.34, 79.79), (50.40, 101.76), (97.68, 101.50)]
# Cosine cut-off calibrated by `make eval` on LFW View 1 (docs/decisions/embedder.md).
DLIB_MATCH_THRESHOLD = 0.91
# The AS-norm score cut-off, calibrated by `make eval` at a 0.5% false-match rate on LFW View 1's
# DevTrain pairs (docs/decisions/search.md).
DLIB_NORMALIZED_THRESHOLD = 2.27
BUILD_VERSION = "1"
MTCNN_LICENCE = "MIT (facenet-pytorch)"
DLIB_LICENCE = "CC0-1.0 (dlib's face recognition ResNet, public domain)"
# FaceNet's name in ``--encoders`` (and ``make models ENCODER=``); it is served as facenet.ENCODER_NAME.
FACENET_CHOICE = "facenet-vggface2"


@contextmanager
def _output(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A build output, written atomically: a crash never leaves a torn model or manifest."""
    with atomic_writer(path, mode) as file:
        # Readable by all, as before: the writer's temporary file starts private (0600).
        os.fchmod(file.fileno(), 0o644)
        yield file


def _write(
    model: onnx.ModelProto,
    path: Path,
    name: str,
    task: Task,
    package: str,
    source_file: str,
    licence: str,
    source_version: str | None = None,
) -> ModelRecord:
    """``source_version``: the installed ``package``'s version unless given."""
    with _output(path) as file:
        onnx.save(model, file)
    return ModelRecord(
        licence=licence,
        name=name,
        task=task,
        file=path.name,
        sha256=sha256_of(path),
        version=BUILD_VERSION,
        source_package=package,
        source_version=version(package) if source_version is None else source_version,
        source_file=source_file,
    )


def _copy_detector(source: DetectorSource, local: Path | None, models_dir: Path) -> ModelRecord:
    data = fetch(source, local)
    with _output(models_dir / source.file) as file:
        file.write(data)
    return ModelRecord(
        name=source.name,
        task="detection",
        file=source.file,
        sha256=source.sha256,
        version=BUILD_VERSION,
        source_package=source.package,
        source_version=source.version,
        source_file=source.source_file,
        licence=source.licence,
    )


def build_all(
    models_dir: Path, detectors: dict[str, Path | None] | None = None, facenet_checkpoint: bytes | None = None
) -> Manifest:
    """MTCNN and dlib's ResNet, and the optional ``detectors``: name -> a local copy of its
    file (None: downloaded from its publisher); FaceNet too when given its checkpoint's bytes."""
    models_dir.mkdir(parents=True, exist_ok=True)
    records = [
        _write(
            model,
            models_dir / f"{name}.onnx",
            f"mtcnn_{name}",
            "detection",
            "facenet-pytorch",
            f"facenet_pytorch/data/{WEIGHTS_OF.get(name, name)}.pt",
            MTCNN_LICENCE,
        )
        for name, model in build_mtcnn_nets(locate_mtcnn_weights()).items()
    ]
    dat = locate_dlib_weights()
    path = models_dir / "dlib_resnet_v1.onnx"
    records.append(
        _write(
            build_dlib_resnet(dat),
            path,
            "dlib_resnet_v1",
            "recognition",
            "face_recognition_models",
            f"face_recognition_models/models/{dat.name}",
            DLIB_LICENCE,
        )
    )
    encoder = EncoderSpec(
        name="dlib_resnet_v1",
        file=path.name,
        dimension=128,
        input_size=INPUT_SIZE,
        mean=INPUT_MEAN,
        scale=(INPUT_SCALE, INPUT_SCALE, INPUT_SCALE),
        channel_order="RGB",
        landmark_template=DLIB_CHIP_TEMPLATE,
        match_threshold=DLIB_MATCH_THRESHOLD,
        normalized_threshold=DLIB_NORMALIZED_THRESHOLD,
    )
    records += [_copy_detector(SOURCES[name], local, models_dir) for name, local in (detectors or {}).items()]
    encoders = [encoder]
    if facenet_checkpoint is not None:
        path = models_dir / f"{facenet.ENCODER_NAME}.onnx"
        records.append(
            _write(
                facenet.build_facenet(facenet_checkpoint),
                path,
                facenet.ENCODER_NAME,
                "recognition",
                "facenet-pytorch",
                facenet.CHECKPOINT_URL,
                facenet.LICENCE,
                # The checkpoint is a release asset, not the installed package's version.
                source_version=facenet.CHECKPOINT_RELEASE,
            )
        )
        encoders.append(facenet.encoder_spec(path.name))
    manifest = Manifest(models=records, encoders=encoders)
    with _output(models_dir / MANIFEST_NAME, "w") as file:
        file.write(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _choices(parser: argparse.ArgumentParser, what: str, value: str, known: list[str]) -> list[str]:
    """The names in a comma-separated option; one not in ``known`` is a usage error."""
    chosen = [name for name in value.replace(" ", "").split(",") if name]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--detectors",
        default="",
        help=f"optional detectors to add, comma-separated: {', '.join(SOURCES)} (scrfd: non-commercial only)",
    )
    for name in SOURCES:
        parser.add_argument(f"--{name}-file", type=Path, help=f"a local copy of {name}'s file (or archive)")
    parser.add_argument(
        "--encoders",
        default="",
        help=f"optional encoders to add beside dlib's: {FACENET_CHOICE} (downloads 107 MiB from GitHub)",
    )
    parser.add_argument(
        "--facenet-file", type=Path, help=f"a local copy of {facenet.CHECKPOINT_URL.rsplit('/', 1)[-1]}"
    )
    args = parser.parse_args(argv)
    encoders = _choices(parser, "encoders", args.encoders, [FACENET_CHOICE])
    chosen = _choices(parser, "detectors", args.detectors, list(SOURCES))
    try:
        checkpoint = None
        if FACENET_CHOICE in encoders:
            checkpoint = (
                facenet.verify_checkpoint(args.facenet_file)
                if args.facenet_file
                else facenet.fetch_checkpoint(default_cache_dir())
            )
        manifest = build_all(
            args.models_dir, {name: getattr(args, f"{name}_file") for name in chosen}, checkpoint
        )
    except (SourceError, facenet.CheckpointError) as error:
        parser.exit(2, f"error: {error}\n")
    for record in manifest.models:
        print(
            f"{record.file:24} sha256 {record.sha256[:16]}…"
            f"  from {record.source_package} {record.source_version}"
        )
    print(f"manifest: {args.models_dir / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
