"""``make run``: start the embedder, wait until its models are loaded, then the search service.

Both run as child processes of this one, logging to this terminal; Ctrl-C (or SIGTERM) stops both.
The search service stays up if the embedder dies: it serves stored data and answers 503 for what
needs the embedder (its /healthz says "degraded") while the embedder is started again, with a
growing pause between attempts. If the search service itself dies, everything stops.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from embedder_service.settings import get_settings as embedder_settings
from search_service.settings import get_settings as search_settings
from tools.processes import ServiceProcess, answers_200, reports_ok

# Pause before restarting a dead embedder: doubled after each failed start, reset once it is up.
FIRST_RESTART_PAUSE_S = 1.0
LONGEST_RESTART_PAUSE_S = 30.0


def _alive(service: ServiceProcess) -> bool:
    return service.process is not None and service.process.poll() is None


def supervise(embedder: ServiceProcess, search: ServiceProcess, stop: threading.Event) -> int:
    """Keep both running until ``stop`` is set (0) or the search service dies (1)."""
    pause = FIRST_RESTART_PAUSE_S
    while not stop.wait(0.5):
        if not _alive(search):
            print("\nthe search service stopped; stopping the embedder too", file=sys.stderr, flush=True)
            return 1
        if _alive(embedder):
            continue
        code = None if embedder.process is None else embedder.process.returncode
        print(f"\nthe embedder stopped (exit code {code}); starting it again", file=sys.stderr, flush=True)
        try:
            embedder.start(timeout_s=120)
            pause = FIRST_RESTART_PAUSE_S
        except (RuntimeError, TimeoutError) as error:
            print(
                f"the embedder did not start: {error}; next try in {pause:g} s", file=sys.stderr, flush=True
            )
            if stop.wait(pause):
                break
            pause = min(pause * 2, LONGEST_RESTART_PAUSE_S)
    return 0


def main() -> int:
    stop = threading.Event()
    # SIGTERM (a service manager, `kill`) and Ctrl-C stop both children.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    embedder = ServiceProcess("embedder_service", embedder_settings().port, {}, ready=reports_ok, output=None)
    env = {"EMBEDDER_URL": os.environ.get("EMBEDDER_URL", embedder.url)}
    # The search service is ready when it answers; it reports the embedder and index in /healthz.
    search = ServiceProcess("search_service", search_settings().port, env, ready=answers_200, output=None)
    try:
        embedder.start(timeout_s=120)
        search.start(timeout_s=60)
        print(
            f"\nfacesearch is up: the page at {search.url}/, the search API at {search.url}/docs, "
            f"the embedder at {embedder.url}/docs\n",
            flush=True,
        )
        return supervise(embedder, search, stop)
    finally:
        search.stop()
        embedder.stop()


if __name__ == "__main__":
    sys.exit(main())
