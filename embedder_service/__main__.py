"""``python -m embedder_service``: serve the embedder with uvicorn on EMBEDDER_HOST:EMBEDDER_PORT."""

import uvicorn

from embedder_service.main import create_app
from embedder_service.settings import get_settings


def main() -> None:
    settings = get_settings()
    print(f"embedder: http://{settings.host}:{settings.port} (models: {settings.models_dir})", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
