"""The web page: ``GET /`` serves it, ``/ui/`` its scripts and style.

The page holds no data (everything it shows comes from the public API, with the user's key), so
main.py opens these paths to callers without a key. The files ship as package data.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS_PATH = "/ui"

# Nothing is loaded from elsewhere: the page's own files, and photos, thumbnails and videos of the
# API (as URLs, or as blob: URLs fetched with the key; clip thumbnails are data: URLs).
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: the browser revalidates (ETag), so a new version of the page shows on reload.
    return FileResponse(
        WEB_DIR / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP},
    )


def assets() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR)
