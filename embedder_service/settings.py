"""Embedder settings, read from the environment (prefix ``EMBEDDER_``) by pydantic-settings.

Every default of the service lives here: the API's optional query parameters fall back to these.
Why each default was chosen: docs/decisions/embedder.md.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facesearch_common.settings import ServiceSettings


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_")

    port: int = 8001
    models_dir: Path = Field(default=Path("models"), validation_alias="MODELS_DIR")
    # Execution providers in order of preference; unavailable ones are skipped (and logged).
    providers: list[str] = Field(default=["CUDAExecutionProvider", "CPUExecutionProvider"])
    # 0 = one intra-op thread per available core.
    intra_op_threads: int = 0
    # The encoder, alignment and flip averaging `make eval` measured best (docs/decisions/embedder.md).
    encoder: str = "dlib_resnet_v1"
    alignment: Literal["five_point", "eyes_nose"] = "five_point"
    # Average the embedding of the chip with that of its mirror image.
    flip_augment: bool = True
    # POST /faces falls back to these three; 20 px and 0.7 are MTCNN's own, kept for photos.
    min_face_size: int = Field(default=20, ge=8, le=4096, description="smallest face to find, in pixels")
    detection_threshold: float = Field(default=0.7, gt=0, lt=1, description="O-Net face probability cut-off")
    max_faces: int = Field(
        default=100, ge=1, le=1000, description="faces kept per image, most probable first"
    )
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 64


@lru_cache
def get_settings() -> EmbedderSettings:
    return EmbedderSettings()
