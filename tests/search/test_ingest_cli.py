"""The bulk ingest command against a real server process, including a SIGKILL mid-ingest."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from search_service.ingest import main
from tests.conftest import REPO_ROOT
from tests.search.fakes import FakeEmbedder, photo
from tests.search.polling import poll_until
from tools.processes import ServiceProcess, search_service


@pytest.fixture
def server(tmp_path: Path, fake_embedder: FakeEmbedder) -> Iterator[ServiceProcess]:
    running = search_service(str(tmp_path / "data"), fake_embedder.url)
    running.start()
    yield running
    running.stop()


def stored_images(server: ServiceProcess) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = httpx.get(f"{server.url}/images", params={"limit": 1000}).json()["images"]
    return images


def _folder(root: Path, count: int) -> Path:
    for i in range(count):
        path = root / f"person{i % 5}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(f"person{i % 5}", variant=i))
    return root


def test_ingest_a_folder_then_resume(
    server: ServiceProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "photos", 10)
    # Same bytes as person0/000.png, found first: that one becomes the duplicate.
    (root / "copy.png").write_bytes((root / "person0" / "000.png").read_bytes())
    (root / "broken.jpg").write_bytes(b"not a photo")
    (root / "notes.txt").write_text("ignored")
    args = [str(root), "--url", server.url, "--batch", "4", "--concurrency", "2", "--quiet"]

    assert main(args) == 1  # broken.jpg failed
    report = capsys.readouterr().out
    assert "photos found:      12" in report and "ingested:          10" in report
    assert "duplicate content: 1" in report and "broken.jpg: HTTP 415" in report
    stored = stored_images(server)
    assert sorted(image["external_id"] for image in stored) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.png") if p.name != "000.png"
    )

    assert main(args) == 1
    report = capsys.readouterr().out
    assert "ingested:          0" in report and "already indexed:   11" in report
    assert stored_images(server) == stored


def test_refused_photos_are_reported_and_the_rest_get_in(
    server: ServiceProcess, fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "photos", 6)
    (root / "person4" / "cut.png").write_bytes(photo("cut")[:200])  # a truncated PNG, in the 2nd batch
    # The first batch's POST /faces fails (the server answers it with a 502): sent again photo by
    # photo, every one gets in; the truncated one is refused beside the others in its batch.
    fake_embedder.fail_next = [500]
    args = [str(root), "--url", server.url, "--batch", "4", "--concurrency", "1", "--quiet"]
    assert main(args) == 1
    report = capsys.readouterr().out
    assert "photos found:      7" in report and "ingested:          6" in report
    assert "failed:            1" in report
    assert "  person4/cut.png: HTTP 400: cut.png: cannot decode image: " in report
    assert len(stored_images(server)) == 6


def test_a_service_that_requires_keys_takes_the_ingest_with_a_write_key(
    tmp_path: Path,
    fake_embedder: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "ingest-key-0123456789abcdef"
    monkeypatch.setenv("SEARCH_API_KEYS", f"{key}:write")
    monkeypatch.delenv("FACESEARCH_API_KEY", raising=False)
    root = _folder(tmp_path / "photos", 3)
    with search_service(str(tmp_path / "data"), fake_embedder.url).running() as keyed:
        args = [str(root), "--url", keyed.url, "--quiet"]
        assert main(args) == 1
        assert "failed:            3" in capsys.readouterr().out
        monkeypatch.setenv("FACESEARCH_API_KEY", key)
        assert main(args) == 0
        assert "ingested:          3" in capsys.readouterr().out
        listed = httpx.get(f"{keyed.url}/images", headers={"X-API-Key": key}).json()["images"]
        assert len(listed) == 3


@pytest.mark.slow  # a real server process killed mid-ingest
def test_sigkill_during_bulk_ingest_loses_and_duplicates_nothing(
    server: ServiceProcess, fake_embedder: FakeEmbedder, tmp_path: Path
) -> None:
    root = _folder(tmp_path / "photos", 80)
    fake_embedder.delay_s = 0.03
    ingest = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search_service.ingest",
            str(root),
            "--url",
            server.url,
            "--batch",
            "2",
            "--concurrency",
            "2",
            "--retries",
            "8",
            "--quiet",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    before = poll_until(
        lambda: stored_images(server), lambda images: len(images) >= 20, what="20 photos stored", timeout_s=60
    )
    server.kill()  # mid-ingest: requests in flight die with it
    server.start()
    out, _ = ingest.communicate(timeout=120)
    assert ingest.returncode == 0, out

    after = stored_images(server)
    digests = [image["sha256"] for image in after]
    assert len(digests) == len(set(digests)) == 80  # everything in, nothing twice
    assert {image["id"] for image in before} <= {image["id"] for image in after}
    for image in before:  # everything stored before the kill is searchable
        data = (root / image["external_id"]).read_bytes()
        response = httpx.post(f"{server.url}/search", files={"image": ("q.png", data)}, params={"k": 1})
        [hit] = response.json()["faces"][0]["hits"]
        assert hit["id"] == image["id"] and hit["score"] > 0.999
