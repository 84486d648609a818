"""Services run as child processes (``python -m ...``), for tests that kill and restart them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_200(response: httpx.Response) -> bool:
    return response.status_code == 200


@dataclass
class ServiceProcess:
    module: str
    port: int
    env: dict[str, str]
    ready: Callable[[httpx.Response], bool] = _answers_200
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        env = os.environ | {"OPENBLAS_NUM_THREADS": "1"} | self.env
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.module} exited during start-up"
            try:
                if self.ready(httpx.get(f"{self.url}/healthz", timeout=2)):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} did not become ready in {timeout_s} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def search_service(data_dir: str, embedder_url: str) -> ServiceProcess:
    port = free_port()
    env = {"DATA_DIR": data_dir, "SEARCH_PORT": str(port), "EMBEDDER_URL": embedder_url}
    return ServiceProcess("search_service", port, env | {"SEARCH_LOG_LEVEL": "WARNING"})
