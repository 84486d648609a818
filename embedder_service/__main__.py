"""``python -m embedder_service``: serve the embedder with uvicorn on EMBEDDER_HOST:EMBEDDER_PORT."""

import sys

import uvicorn
from pydantic import ValidationError

from embedder_service.main import create_app
from embedder_service.settings import EmbedderSettings, get_settings
from facesearch_common.access import settings_errors


def _settings() -> EmbedderSettings:
    """The settings, or exit 1 naming what is wrong (never the values: they may hold the key)."""
    try:
        return get_settings()
    except ValidationError as error:
        sys.exit(f"embedder not started: {settings_errors(error)}")


def main() -> None:
    settings = _settings()
    key = "required" if settings.api_key else "off (loopback only)"
    print(
        f"embedder: http://{settings.host}:{settings.port} (models: {settings.models_dir}; API key: {key})",
        flush=True,
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
