"""Embedder settings, read from the environment (prefix ``EMBEDDER_``) by pydantic-settings.

Every default of the service lives here: the API's optional query parameters fall back to these.
Why each default was chosen: docs/decisions/embedder.md.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from facesearch_common.access import DEFAULT_ALLOWED_HOSTS, Hosts, OptionalKey, require_keys_off_loopback
from facesearch_common.settings import ServiceSettings

# Score cut-offs of the other detectors, whose scores mean something else than O-Net's
# probability: the field's default is MTCNN's (docs/decisions/embedder.md, "Detectors").
OTHER_DETECTOR_THRESHOLDS = {"yunet": 0.85, "scrfd": 0.5}


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_")

    port: int = 8001
    models_dir: Path = Field(default=Path("models"), validation_alias="MODELS_DIR")
    # Execution providers in order of preference; unavailable ones are skipped (and logged).
    providers: list[str] = Field(default=["CUDAExecutionProvider", "CPUExecutionProvider"])
    # 0 = one intra-op thread per available core.
    intra_op_threads: int = 0
    # The GPU runtime (docs/decisions/embedder.md, "On a GPU").
    require_gpu: bool = Field(
        default=False, description="fail at start-up unless every model runs on the CUDA provider"
    )
    cuda_device_id: int = Field(default=0, ge=0, description="the GPU the CUDA provider runs on")
    cuda_tf32: bool = Field(
        default=False,
        description="TF32 matrix maths on the GPU: faster, no longer equal to the CPU",
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        default="EXHAUSTIVE", description="how cuDNN picks convolution algorithms, once per input shape"
    )
    cuda_mem_limit_bytes: int = Field(default=0, ge=0, description="the CUDA arena's limit; 0: none")
    io_binding: bool = Field(
        default=True,
        description="on the GPU, outputs stay in GPU memory until the run ends, then are copied back once",
    )
    shape_buckets: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="pad model inputs to a few shapes known in advance; auto: on the GPU only",
    )
    batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description=(
            "how long a model run on the GPU waits for other requests to join it;"
            " on the CPU runs never wait, which would only add latency"
        ),
    )
    batch_max_images: int = Field(default=32, ge=1, description="images detected in one batched run at most")
    encoder_batch: int = Field(default=64, ge=1, description="faces embedded in one model run at most")
    worker_threads: int = Field(
        default=0, ge=0, description="threads decoding and preparing images; 0: one per available core"
    )
    # The encoder, alignment and flip averaging `make eval` measured best (docs/decisions/embedder.md).
    encoder: str = "dlib_resnet_v1"
    alignment: Literal["five_point", "eyes_nose"] = "five_point"
    # Average the embedding of the chip with that of its mirror image.
    flip_augment: bool = True
    # The face detector (docs/decisions/embedder.md, "Detectors"); yunet and scrfd need
    # `make models DETECTORS=...`, and scrfd's weights are for non-commercial research only.
    detector: Literal["mtcnn", "yunet", "scrfd"] = "mtcnn"
    # POST /faces falls back to these three. 20 px is MTCNN's own; 0.8, not MTCNN's 0.7, is the
    # O-Net cut-off `make eval`'s detection benchmark chose: no false face on the no-face set, LFW
    # recall and group counts kept (set 0.7 for MTCNN's published behaviour).
    min_face_size: int = Field(default=20, ge=8, le=4096, description="smallest face to find, in pixels")
    detection_threshold: float = Field(default=0.8, gt=0, lt=1, description="O-Net face probability cut-off")
    max_faces: int = Field(
        default=100, ge=1, le=1000, description="faces kept per image, most probable first"
    )
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 64
    # Bounded work per request (issue 10; the numbers behind each: docs/decisions/embedder.md).
    max_request_pixels: int = Field(
        default=100_000_000, ge=1, description="decoded pixels of all a request's images together"
    )
    detect_max_side: int = Field(
        default=2048, ge=64, description="photos longer than this are detected on a copy this long"
    )
    max_queued_requests: int = Field(
        default=64, ge=1, description="/faces requests admitted at once, waiting or running; then 503"
    )
    request_deadline_s: float = Field(
        default=60.0, gt=0, description="a /faces request not done this long after arrival is a 503"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After of the 503s above, in seconds")
    light_run_pixels: int = Field(
        default=1_000_000,
        ge=0,
        description="model runs on at most this many input pixels never wait behind a larger one",
    )
    # Required on every route but /healthz when set (the search service sends it); required to bind
    # off loopback. Host headers served (against DNS rebinding); `*` serves any.
    api_key: OptionalKey = None
    allowed_hosts: Hosts = Field(default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS))

    @model_validator(mode="after")
    def _detector_threshold(self) -> Self:
        """Without EMBEDDER_DETECTION_THRESHOLD, a detector other than MTCNN gets its own cut-off."""
        if "detection_threshold" not in self.model_fields_set and self.detector in OTHER_DETECTOR_THRESHOLDS:
            self.detection_threshold = OTHER_DETECTOR_THRESHOLDS[self.detector]
        return self

    @model_validator(mode="after")
    def _key_off_loopback(self) -> Self:
        require_keys_off_loopback(self.host, self.api_key is not None, "EMBEDDER_HOST", "EMBEDDER_API_KEY")
        return self


@lru_cache
def get_settings() -> EmbedderSettings:
    return EmbedderSettings()
