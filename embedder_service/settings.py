"""Embedder settings, read from the environment (prefix ``EMBEDDER_``) by pydantic-settings."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbedderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    models_dir: Path = Field(default=Path("models"), validation_alias="MODELS_DIR")
    # Execution providers in order of preference; unavailable ones are skipped (and logged).
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # 0 = one intra-op thread per available core.
    intra_op_threads: int = 0
    encoder: str = "dlib_resnet_v1"
    alignment: Literal["five_point", "eyes_nose"] = "five_point"
    # Average the embedding of the chip with that of its mirror image.
    flip_augment: bool = True
    min_face_size: int = 20
    detection_threshold: float = 0.7
    max_faces: int = 100
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 64
    log_level: str = "INFO"
    log_json: bool = True


@lru_cache
def get_settings() -> EmbedderSettings:
    return EmbedderSettings()
