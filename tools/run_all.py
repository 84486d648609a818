"""``make run``: start the embedder, wait until its models are loaded, then the search service.

Both run as child processes of this one, logging to this terminal; Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from embedder_service.settings import get_settings as embedder_settings
from search_service.settings import get_settings as search_settings
from tools.processes import ServiceProcess, answers_200, reports_ok


def main() -> int:
    # SIGTERM (a service manager, `kill`) unwinds like Ctrl-C, so the children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    embedder = ServiceProcess("embedder_service", embedder_settings().port, {}, ready=reports_ok, output=None)
    env = {"EMBEDDER_URL": os.environ.get("EMBEDDER_URL", embedder.url)}
    # The search service is ready when it answers; it reports the embedder and index in /healthz.
    search = ServiceProcess("search_service", search_settings().port, env, ready=answers_200, output=None)
    try:
        embedder.start(timeout_s=120)
        search.start(timeout_s=60)
        print(f"\nfacesearch is up: search API {search.url}/docs, embedder {embedder.url}/docs\n", flush=True)
        while all(service.process and service.process.poll() is None for service in (embedder, search)):
            time.sleep(0.5)
        return 1  # one of them died on its own
    except KeyboardInterrupt:
        return 0
    finally:
        search.stop()
        embedder.stop()


if __name__ == "__main__":
    sys.exit(main())
