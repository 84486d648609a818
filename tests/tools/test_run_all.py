"""``make run``'s supervisor: the search service stays up while a dead embedder is restarted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.search.polling import poll_until
from tools.processes import ServiceProcess, free_port
from tools.run_all import supervise

# A stand-in for either service: answers 200 on /healthz, on the port it is given.
FAKE_SERVICE = """
import http.server, os

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["FAKE_PORT"])), Health).serve_forever()
"""


def fake_service(folder: Path) -> ServiceProcess:
    port = free_port()
    return ServiceProcess("fake_service", port, {"FAKE_PORT": str(port), "PYTHONPATH": str(folder)})


def answers(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    (tmp_path / "fake_service.py").write_text(FAKE_SERVICE)
    embedder, search = fake_service(tmp_path), fake_service(tmp_path)
    embedder.start(timeout_s=20)
    search.start(timeout_s=20)
    yield embedder, search
    search.stop()
    embedder.stop()


def run_supervisor(embedder: ServiceProcess, search: ServiceProcess) -> tuple[threading.Event, list[int]]:
    stop, result = threading.Event(), []
    threading.Thread(target=lambda: result.append(supervise(embedder, search, stop)), daemon=True).start()
    return stop, result


def test_a_dead_embedder_is_restarted_while_search_stays_up(
    services: tuple[ServiceProcess, ServiceProcess],
) -> None:
    embedder, search = services
    stop, result = run_supervisor(embedder, search)
    search_process = search.process
    assert embedder.process is not None
    first = embedder.process.pid
    embedder.kill()
    restarted = poll_until(
        lambda: embedder.process is not None and embedder.process.pid != first and answers(embedder),
        bool,
        what="the embedder back up",
        timeout_s=30,
    )
    assert restarted
    assert search.process is search_process and answers(search)  # never stopped
    stop.set()
    assert poll_until(lambda: result, bool, what="the supervisor to return", timeout_s=10) == [0]


def test_a_dead_search_service_stops_everything(services: tuple[ServiceProcess, ServiceProcess]) -> None:
    embedder, search = services
    stop, result = run_supervisor(embedder, search)
    search.kill()
    assert poll_until(lambda: result, bool, what="the supervisor to return", timeout_s=10) == [1]
    stop.set()
