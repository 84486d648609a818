"""``python -m search_service``: serve the API with uvicorn on SEARCH_HOST:SEARCH_PORT."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from facesearch_common.access import settings_errors
from search_service.main import create_app
from search_service.settings import SearchSettings, get_settings


def _settings() -> SearchSettings:
    """The settings, or exit 1 naming what is wrong (never the values: they may hold keys)."""
    try:
        return get_settings()
    except ValidationError as error:
        sys.exit(f"search service not started: {settings_errors(error)}")


def main() -> None:
    settings = _settings()
    keys = len(settings.access.api_keys)
    print(
        f"facesearch search service on http://{settings.host}:{settings.port} (API docs at /docs); "
        f"data in {settings.data_dir.resolve()}; index: {settings.index_backend}; "
        f"embedder at {settings.embedder.url}; API keys: {keys or 'off (loopback only)'}",
        flush=True,
    )
    # log_config=None: keep the structlog setup create_app() installed.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
