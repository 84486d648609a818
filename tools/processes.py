"""The services as child processes (``python -m ...``): for ``make run``, the benchmarks, and the
tests that kill and restart them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_200(response: httpx.Response) -> bool:
    return response.status_code == 200


def reports_ok(response: httpx.Response) -> bool:
    """Ready in full: the embedder has its models loaded, the search service reaches everything."""
    return response.status_code == 200 and response.json().get("status") == "ok"


@dataclass
class ServiceProcess:
    module: str
    port: int
    env: dict[str, str]
    ready: Callable[[httpx.Response], bool] = answers_200
    # Where the child's output goes: discarded by default, a log file, or None to inherit ours.
    output: IO[bytes] | int | None = subprocess.DEVNULL
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        env = os.environ | {"OPENBLAS_NUM_THREADS": "1"} | self.env
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.output,
            stderr=None if self.output is subprocess.DEVNULL else self.output,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with code {self.process.returncode} during start-up"
                )
            with contextlib.suppress(httpx.TransportError, ValueError):
                if self.ready(httpx.get(f"{self.url}/healthz", timeout=2)):
                    return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.module} did not become ready in {timeout_s} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @contextlib.contextmanager
    def running(self, timeout_s: float = 60) -> Iterator[ServiceProcess]:
        self.start(timeout_s)
        try:
            yield self
        finally:
            self.stop()


def embedder_service(models_dir: Path, output: IO[bytes] | int | None = subprocess.DEVNULL) -> ServiceProcess:
    port = free_port()
    env = {
        "EMBEDDER_PORT": str(port),
        "MODELS_DIR": str(models_dir.resolve()),
        "EMBEDDER_LOG_LEVEL": "WARNING",
    }
    return ServiceProcess("embedder_service", port, env, ready=reports_ok, output=output)


def search_service(data_dir: str, embedder_url: str) -> ServiceProcess:
    port = free_port()
    env = {"DATA_DIR": data_dir, "SEARCH_PORT": str(port), "EMBEDDER_URL": embedder_url}
    return ServiceProcess("search_service", port, env | {"SEARCH_LOG_LEVEL": "WARNING"})
