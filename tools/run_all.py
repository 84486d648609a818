"""``make run``: start the embedder, wait until its models are loaded, then the search service.

Both run as child processes of this one; Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from embedder_service.settings import get_settings as embedder_settings


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"embedder exited with code {process.returncode} before becoming ready")
        try:
            if httpx.get(url, timeout=1.0).json().get("models_loaded"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"embedder not ready at {url} after {timeout_s:.0f} s")


def main() -> int:
    # SIGTERM (a service manager, `kill`) unwinds like Ctrl-C, so the children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    embedder = embedder_settings()
    env = dict(os.environ)
    env.setdefault("EMBEDDER_URL", f"http://{embedder.host}:{embedder.port}")
    children = [subprocess.Popen([sys.executable, "-m", "embedder_service"], env=env)]
    try:
        wait_until_ready(f"{env['EMBEDDER_URL']}/healthz", children[0], timeout_s=120)
        children.append(subprocess.Popen([sys.executable, "-m", "search_service"], env=env))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return next(child.returncode for child in children if child.returncode is not None) or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
