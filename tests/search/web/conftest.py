"""Headless Chromium (Debian's, driven by Playwright) against the real services, and screenshots.

Chromium is never downloaded (`playwright install`): the tests use the one on the PATH and skip
without it, except under CI, which must provide it (as tests/conftest.py does for ../shared).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import REPO_ROOT

SCREENSHOTS = REPO_ROOT / "reports" / "ui"
# The flags that work on these machines (../shared/DESIGN.md): no sandbox in a container, no GPU,
# and no network of Chromium's own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must provide it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (nothing stored, no key) at a desktop size; fails the test on any
    uncaught error of the page's scripts, and on anything its Content-Security-Policy blocked."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield opened
    context.close()
    assert not errors, f"the page failed: {errors}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save the page as reports/ui/<name>.png (a test artefact; git-ignored): whole, or (with a
    dialog open, whose backdrop covers only the window) what the window shows."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # From the top: the query photo sticks to the window, wherever the test scrolled to.
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path, full_page=full_page)
    return path
