"""The model manifest written by ``make models``: what each ONNX file is, where it came from."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from embedder_service.models.encoder import EncoderSpec

MANIFEST_NAME = "manifest.json"
Task = Literal["detection", "recognition"]


class ManifestError(ValueError):
    """A model manifest that cannot be used: written by an older build, or damaged."""


class ModelRecord(BaseModel):
    name: str
    task: Task
    file: str
    sha256: str
    version: str
    source_package: str
    source_version: str
    source_file: str
    licence: str = Field(description="the weights' licence, as their publisher states it")


class Manifest(BaseModel):
    models: list[ModelRecord]
    encoders: list[EncoderSpec]

    def encoder(self, name: str) -> EncoderSpec:
        for spec in self.encoders:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.encoders)
        raise KeyError(f"encoder {name!r} is not in the model manifest (known: {known})")

    def record(self, file: str) -> ModelRecord:
        return next(model for model in self.models if model.file == file)

    def named(self, name: str) -> ModelRecord | None:
        return next((model for model in self.models if model.name == name), None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(models_dir: Path) -> Manifest:
    path = models_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no model manifest at {path}: run `make models` first")
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValidationError as error:
        problems = error.errors()
        if all(problem["type"] == "missing" for problem in problems):
            lacking = ", ".join(sorted({str(problem["loc"][-1]) for problem in problems}))
            raise ManifestError(
                f"the model manifest at {path} was written by an older `make models` (it lacks {lacking}):"
                " rerun `make models`"
            ) from None
        summary = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or 'file'}: {problem['msg']}" for problem in problems[:3]
        )
        raise ManifestError(
            f"the model manifest at {path} is invalid ({summary}): rerun `make models`"
        ) from None
