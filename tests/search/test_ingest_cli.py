"""The bulk ingest command against a real server process, including a SIGKILL mid-ingest."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from search_service.ingest import main
from tests.conftest import REPO_ROOT
from tests.search.fakes import FakeEmbedder, photo


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """``python -m search_service`` as a child process."""

    data_dir: Path
    embedder_url: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = os.environ | {
            "DATA_DIR": str(self.data_dir),
            "SEARCH_PORT": str(self.port),
            "EMBEDDER_URL": self.embedder_url,
            "SEARCH_LOG_LEVEL": "WARNING",
            "OPENBLAS_NUM_THREADS": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "search_service"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "search service exited during start-up"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError("search service did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def images(self) -> list[dict]:
        return httpx.get(f"{self.url}/images", params={"limit": 1000}).json()["images"]


@pytest.fixture
def server(tmp_path: Path, fake_embedder: FakeEmbedder) -> Iterator[Server]:
    running = Server(tmp_path / "data", fake_embedder.url, _free_port())
    running.start()
    yield running
    running.stop()


def _folder(root: Path, count: int) -> Path:
    for i in range(count):
        path = root / f"person{i % 5}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(f"person{i % 5}", variant=i))
    return root


def test_ingest_a_folder_then_resume(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    stored = server.images()
    assert sorted(image["external_id"] for image in stored) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.png") if p.name != "000.png"
    )

    assert main(args) == 1
    report = capsys.readouterr().out
    assert "ingested:          0" in report and "already indexed:   11" in report
    assert server.images() == stored


def test_sigkill_during_bulk_ingest_loses_and_duplicates_nothing(
    server: Server, fake_embedder: FakeEmbedder, tmp_path: Path
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
    while len(before := server.images()) < 20:
        time.sleep(0.05)
    server.kill()  # mid-ingest: requests in flight die with it
    server.start()
    out, _ = ingest.communicate(timeout=120)
    assert ingest.returncode == 0, out

    after = server.images()
    digests = [image["sha256"] for image in after]
    assert len(digests) == len(set(digests)) == 80  # everything in, nothing twice
    assert {image["id"] for image in before} <= {image["id"] for image in after}
    for image in before:  # everything stored before the kill is searchable
        data = (root / image["external_id"]).read_bytes()
        response = httpx.post(f"{server.url}/search", files={"image": ("q.png", data)}, params={"k": 1})
        [hit] = response.json()["faces"][0]["hits"]
        assert hit["id"] == image["id"] and hit["score"] > 0.999
