"""``python -m search_service``: serve the API with uvicorn on SEARCH_HOST:SEARCH_PORT."""

from __future__ import annotations

import uvicorn

from search_service.main import create_app
from search_service.settings import get_settings


def main() -> None:
    settings = get_settings()
    print(
        f"facesearch search service on http://{settings.host}:{settings.port} (API docs at /docs); "
        f"data in {settings.data_dir.resolve()}; index: {settings.index_backend}; "
        f"embedder at {settings.embedder.url}",
        flush=True,
    )
    # log_config=None: keep the structlog setup create_app() installed.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
