"""Search service settings, read from the environment by pydantic-settings.

Names shared with the rest of the product (``DATA_DIR``, ``EMBEDDER_URL``, ``INDEX_BACKEND``,
``OPENSEARCH_URL``) are read without a prefix, as DESIGN.md and the Makefile spell them; everything
specific to this service is ``SEARCH_*``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class SearchSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEARCH_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default=Path("data"), validation_alias="DATA_DIR")
    index_backend: Literal["embedded", "opensearch"] = Field(
        default="embedded", validation_alias="INDEX_BACKEND"
    )
    # OpenSearch backend (INDEX_BACKEND=opensearch); OPENSEARCH_URL may list nodes, comma-separated,
    # and may carry credentials. The rest are SEARCH_OPENSEARCH_*.
    opensearch_url: str = Field(default="http://127.0.0.1:9200", validation_alias="OPENSEARCH_URL")
    opensearch_index: str = "facesearch-faces"
    opensearch_shards: int = Field(default=1, ge=1)
    # The SQLite store can rebuild the index: replicas buy availability, not durability.
    opensearch_replicas: int = Field(default=0, ge=0)
    opensearch_hnsw_m: int = Field(default=16, ge=2)
    opensearch_ef_construction: int = Field(default=128, ge=2)
    opensearch_ef_search: int = Field(default=128, ge=1, le=10_000)
    opensearch_timeout_s: float = Field(default=10.0, gt=0)
    opensearch_bulk_timeout_s: float = Field(default=120.0, gt=0)
    opensearch_retries: int = Field(default=2, ge=0)
    opensearch_connect_wait_s: float = Field(default=60.0, ge=0)
    opensearch_username: str | None = None
    opensearch_password: SecretStr | None = None
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: Path | None = None

    # Cosine similarity at or above which a hit is reported as `match: true`. `make eval` chose 0.9107
    # on LFW View 1 for the default pipeline (five-point alignment, flip-averaged; reports/eval.md).
    # The real clips agree: the same person's faces in video scored 0.925-0.98 against his stills
    # while the best cross-person scores were 0.904 (Miranda's still vs a passer-by in the crowd
    # clip) and 0.900 (his still vs Obama); at 0.90 both were reported as matches. On LFW DevTest
    # 0.9107 accepts 98.8% of same-person pairs at a false-match rate of 1.6% (8 of 500 pairs).
    match_threshold: float = Field(default=0.91, ge=-1.0, le=1.0)
    default_collection: str = "default"

    # Upload limits, enforced while the body streams in (FastAPI's per-route body limit), so an
    # oversized upload is refused before it is buffered.
    max_image_bytes: int = Field(default=25 * MiB, gt=0)
    max_images_per_request: int = Field(default=64, gt=0)
    max_request_bytes: int = Field(default=200 * MiB, gt=0)

    embedder_url: str = Field(default="http://127.0.0.1:8001", validation_alias="EMBEDDER_URL")
    embedder_connect_timeout_s: float = Field(default=3.0, gt=0)
    # Detection on a multi-megapixel photo batch on a CPU can take seconds; keep well above that.
    embedder_read_timeout_s: float = Field(default=120.0, gt=0)
    # Attempts after the first one on transient failures (connect errors, timeouts, 5xx).
    embedder_retries: int = Field(default=3, ge=0)
    embedder_backoff_s: float = Field(default=0.25, ge=0)
    # Photos per `POST /faces` call, and a byte budget per call, whichever is reached first.
    embedder_batch_images: int = Field(default=16, gt=0)
    embedder_batch_bytes: int = Field(default=24 * MiB, gt=0)
    # How long the embedder's model name is trusted before asking again (it changes only on restart).
    embedder_model_ttl_s: float = Field(default=30.0, ge=0)

    # Embedded index: exact search (numpy) below this many candidate faces, faiss HNSW from here on.
    # Measured through EmbeddedIndex (2 shared cores, 128-d clustered vectors, one query, k=20,
    # p50): exact 0.34 / 0.49 / 1.15 / 3.3 ms at 10k / 20k / 50k / 100k; HNSW 0.25 / 0.29 / 0.33 /
    # 0.65 ms, but recall@20 0.99 / 0.98 / 0.95 / 0.91 and a graph build of ~2.5k vectors/s. Below
    # 50k exact costs about a millisecond, is always right and needs no graph.
    hnsw_min_faces: int = Field(default=50_000, ge=1)
    # Graph quality against search breadth, measured by `make bench` at 1M real-embedding-derived
    # vectors (k=20, one query, 2 cores): efConstruction 80 gave match recall 0.893 / 0.961 / 0.991
    # at efSearch 128 / 256 / 512 (p50 0.71 / 1.18 / 2.24 ms); efConstruction 200 gives 0.964 /
    # 0.981 / 0.992 at efSearch 192 / 256 / 384 (p50 1.12 / 1.31 / 1.93 ms). The build then runs at
    # ~1,600 vectors/s (1M in ~11 min), in the background and persisted, so search pays nothing.
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    hnsw_ef_search: int = Field(default=384, ge=8)
    # Rebuild (compact) the graph when this share of its nodes belong to deleted faces.
    hnsw_max_dead_fraction: float = Field(default=0.2, gt=0, lt=1)
    # OpenMP threads faiss may use; the embedder shares the machine, so default to one.
    index_threads: int = Field(default=1, ge=1)

    # Videos: streamed to disk, checked against this size while they arrive.
    max_video_bytes: int = Field(default=2 * 1024 * MiB, gt=0)
    # Background ingest jobs run at once; each keeps the embedder busy, and 2 cores suit one.
    video_workers: int = Field(default=1, ge=1)
    # Sampled frames per second of video: a face on screen for one second is seen twice.
    video_sample_fps: float = Field(default=2.0, gt=0)
    # Frames per embedder call (and between cancellation checks and progress updates).
    video_batch_frames: int = Field(default=8, ge=1)
    # Frames are decoded at most this large (longest side): bounds memory and JPEG work, and keeps
    # thumbnails and face crops sharp.
    video_max_side: int = Field(default=1280, ge=64)
    # Faces are detected as if the frame were this large (longest side), by raising the embedder's
    # min_face_size in proportion: MTCNN's cost follows the first level of its pyramid, so this costs
    # what a downscaled frame would (embedder CPU per 720p crowd frame: 174 ms this way, 164-178 ms
    # downscaled) while alignment and embedding still see full-resolution pixels. Measured through
    # the whole path (tools/bench_video.py, 2 shared cores, 2 samples/s): at 640, 2.3-3.2x real time
    # at 1280x720 and 4.4x at 640x360; at 960, 1.8-2.9x at 720p for the same faces (44 vs 43).
    video_detect_side: int = Field(default=640, ge=64)
    # Detection confidence a face in a video frame needs (photos keep the embedder's 0.7): over many
    # frames MTCNN's misfires add up. On the real clips 5 of its 7 misfires (hands, hair) scored
    # under 0.9, and every real face 0.905 or more.
    video_detection_threshold: float = Field(default=0.9, gt=0, lt=1)
    video_jpeg_quality: int = Field(default=90, ge=50, le=100)

    log_level: str = "INFO"
    log_json: bool = True


@lru_cache
def get_settings() -> SearchSettings:
    return SearchSettings()
