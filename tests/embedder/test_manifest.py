"""The model manifest: `make models` writes each encoder's match threshold; older manifests are refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embedder_service.build.__main__ import build_all
from embedder_service.main import create_app
from embedder_service.models.manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_of
from embedder_service.settings import EmbedderSettings


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make models` into a fresh directory (from the weight packages in the venv: under a second)."""
    directory = tmp_path_factory.mktemp("models")
    build_all(directory)
    return directory


def test_build_writes_the_encoders_calibrated_match_threshold(built: Path) -> None:
    written = json.loads((built / MANIFEST_NAME).read_text())
    (encoder,) = written["encoders"]
    assert encoder["name"] == "dlib_resnet_v1"
    assert encoder["match_threshold"] == 0.91
    assert load_manifest(built).encoder("dlib_resnet_v1").match_threshold == 0.91


def test_build_leaves_only_complete_files(built: Path) -> None:
    manifest = load_manifest(built)
    assert sorted(path.name for path in built.iterdir()) == sorted(
        [MANIFEST_NAME, *(record.file for record in manifest.models)]
    )
    for record in manifest.models:
        assert sha256_of(built / record.file) == record.sha256
    for path in built.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name  # readable by the service's user


@pytest.fixture
def old_models(built: Path, tmp_path: Path) -> Path:
    """A manifest as `make models` wrote it before encoders carried their match threshold."""
    manifest = json.loads((built / MANIFEST_NAME).read_text())
    for encoder in manifest["encoders"]:
        del encoder["match_threshold"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return tmp_path


def test_a_manifest_without_match_threshold_is_refused_with_what_to_do(old_models: Path) -> None:
    with pytest.raises(
        ManifestError, match=r"older `make models` \(it lacks match_threshold\): rerun `make models`"
    ):
        load_manifest(old_models)


def test_the_service_does_not_start_on_an_old_manifest(old_models: Path) -> None:
    app = create_app(EmbedderSettings(models_dir=old_models, log_json=False))
    with pytest.raises(ManifestError, match="rerun `make models`"), TestClient(app):
        pass


def test_a_damaged_manifest_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"models": [], "encoders": [{"name": 3}]}')
    with pytest.raises(ManifestError, match=r"is invalid \(encoders\.0\.name: .*\): rerun `make models`"):
        load_manifest(tmp_path)


def test_a_manifest_that_is_not_json_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"models": [')
    with pytest.raises(ManifestError, match=r"is invalid \(file: Invalid JSON.*\): rerun `make models`"):
        load_manifest(tmp_path)


def test_every_model_states_its_licence(built: Path) -> None:
    licences = {record.name: record.licence for record in load_manifest(built).models}
    assert licences == {
        "mtcnn_pnet": "MIT (facenet-pytorch)",
        "mtcnn_rnet": "MIT (facenet-pytorch)",
        "mtcnn_onet": "MIT (facenet-pytorch)",
        "mtcnn_pnet_packed": "MIT (facenet-pytorch)",
        "dlib_resnet_v1": "CC0-1.0 (dlib's face recognition ResNet, public domain)",
    }


def test_a_manifest_without_licences_is_refused_with_what_to_do(built: Path, tmp_path: Path) -> None:
    manifest = json.loads((built / MANIFEST_NAME).read_text())
    for record in manifest["models"]:
        del record["licence"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"older `make models` \(it lacks licence\): rerun `make models`"):
        load_manifest(tmp_path)
