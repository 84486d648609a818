"""Search service settings, read from the environment by pydantic-settings.

Settings come in groups, one per consumer, each read with its own prefix and handed whole to the
component that uses it: ``EmbedderClientSettings`` to the embedder client, ``UploadSettings`` to
the upload routes, ``HnswSettings`` to the embedded index, ``OpenSearchSettings`` to the
OpenSearch backend, ``MilvusSettings`` to the Milvus backend, ``VideoSettings`` to video ingest,
``ScoringSettings`` to search scoring, ``AccessSettings`` to access control.
Names shared with the rest of the product (``DATA_DIR``, ``EMBEDDER_URL``, ``INDEX_BACKEND``,
``OPENSEARCH_URL``, ``MILVUS_URI``) are read without a prefix.
Why each default is what it is: docs/decisions/.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from facesearch_common.access import (
    DEFAULT_ALLOWED_HOSTS,
    ApiKeys,
    Hosts,
    NameList,
    OptionalKey,
    require_keys_off_loopback,
)
from facesearch_common.settings import ServiceSettings, SettingsGroup

MiB = 1024 * 1024


class EmbedderClientSettings(SettingsGroup):
    """How the search service talks to the embedder (``SEARCH_EMBEDDER_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_EMBEDDER_")

    url: str = Field(default="http://127.0.0.1:8001", validation_alias="EMBEDDER_URL")
    # The embedder's own key (it reads the same variable), sent as a Bearer token.
    api_key: OptionalKey = Field(default=None, validation_alias="EMBEDDER_API_KEY")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    # Detection on a multi-megapixel photo batch on a CPU can take seconds; keep well above that.
    read_timeout_s: float = Field(default=120.0, gt=0)
    # Attempts after the first one on failures worth retrying: transport errors other than a read
    # timeout, and 503 or 429 answers ("try later"); no other answer is retried.
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.25, ge=0)
    # The most a 503/429 answer's Retry-After makes the client wait before its next attempt.
    retry_after_max_s: float = Field(default=5.0, ge=0)
    # The circuit breaker's health probe (docs/decisions/search.md): every `probe_interval_s` it asks
    # the embedder `GET /models` within `probe_timeout_s`; after `failures_to_open` failures in a row
    # (probes or requests) embedder calls fail at once with a 503, until a probe succeeds.
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    failures_to_open: int = Field(default=3, ge=1)
    # Photos per `POST /faces` call, and a byte budget per call, whichever is reached first.
    batch_images: int = Field(default=16, gt=0)
    batch_bytes: int = Field(default=24 * MiB, gt=0)
    # `POST /faces` calls in flight at once for one request's photos (a bulk upload larger than a
    # batch): the embedder gets the next batch while it runs one.
    batches_in_flight: int = Field(default=4, gt=0)


class UploadSettings(SettingsGroup):
    """Upload limits (``SEARCH_MAX_*``), enforced while the body streams in."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    max_image_bytes: int = Field(default=25 * MiB, gt=0)
    max_images_per_request: int = Field(default=64, gt=0)
    max_request_bytes: int = Field(default=200 * MiB, gt=0)
    max_video_bytes: int = Field(default=2 * 1024 * MiB, gt=0)


class HnswSettings(SettingsGroup):
    """The embedded index (``SEARCH_HNSW_*``): exact search below ``min_faces``, HNSW above."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_HNSW_")

    min_faces: int = Field(default=50_000, ge=1)
    m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=200, ge=8)
    ef_search: int = Field(default=384, ge=8)
    # Rebuild (compact) the graph when this share of its nodes belong to deleted faces.
    max_dead_fraction: float = Field(default=0.2, gt=0, lt=1)
    # OpenMP threads faiss may use; the embedder shares the machine, so one by default.
    threads: int = Field(default=1, ge=1, validation_alias="SEARCH_INDEX_THREADS")


class OpenSearchSettings(SettingsGroup):
    """The OpenSearch backend (``INDEX_BACKEND=opensearch``; ``OPENSEARCH_URL``, ``SEARCH_OPENSEARCH_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_OPENSEARCH_")

    # May list nodes, comma-separated, and may carry credentials.
    url: str = Field(default="http://127.0.0.1:9200", validation_alias="OPENSEARCH_URL")
    index: str = "facesearch-faces"
    shards: int = Field(default=1, ge=1)
    # The SQLite store can rebuild the index: replicas buy availability, not durability.
    replicas: int = Field(default=0, ge=0)
    hnsw_m: int = Field(default=16, ge=2)
    ef_construction: int = Field(default=128, ge=2)
    ef_search: int = Field(default=128, ge=1, le=10_000)
    timeout_s: float = Field(default=10.0, gt=0)
    bulk_timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)
    # First wait before a retry (then doubling); a node that is down is usually back within seconds.
    backoff_s: float = Field(default=0.25, ge=0)
    connect_wait_s: float = Field(default=60.0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: Path | None = None

    def http_auth(self) -> tuple[str, str] | None:
        if self.username and self.password:
            return self.username, self.password.get_secret_value()
        return None


class MilvusSettings(SettingsGroup):
    """The Milvus backend (``INDEX_BACKEND=milvus``; ``MILVUS_URI``, ``SEARCH_MILVUS_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_MILVUS_")

    # A server (http://host:19530, https://...), or a Milvus Lite file (a path ending in .db) given
    # as SEARCH_MILVUS_URI: pymilvus reads MILVUS_URI itself when imported and takes only URLs there.
    uri: str = Field(
        default="http://127.0.0.1:19530", validation_alias=AliasChoices("MILVUS_URI", "SEARCH_MILVUS_URI")
    )
    # "user:password", or an API key, when the server checks them.
    token: SecretStr | None = None
    # Unset: the server's default database.
    db_name: str | None = None
    # Milvus collection names: letters, digits and underscores, not starting with a digit.
    collection: str = Field(default="facesearch_faces", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    hnsw_m: int = Field(default=16, ge=2, le=2048)
    ef_construction: int = Field(default=200, ge=1)
    # Raised to k when a search asks for more hits (Milvus needs ef >= k).
    ef_search: int = Field(default=128, ge=1, le=32_768)
    # Faces per insert request while building or repairing (each request is retried whole).
    insert_batch: int = Field(default=1000, ge=1)
    # Faces added since the last flush that trigger one (best effort): Milvus Lite searches rows
    # not yet flushed without their index. A server seals segments by itself.
    flush_every: int = Field(default=10_000, ge=1)
    # Per request; pymilvus retries a broken connection within it before it gives up.
    timeout_s: float = Field(default=10.0, gt=0)
    # Inserts, deletes, and creating, loading or dropping the collection.
    bulk_timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)
    backoff_s: float = Field(default=0.25, ge=0)
    connect_wait_s: float = Field(default=60.0, ge=0)


class VideoSettings(SettingsGroup):
    """Video ingest (``SEARCH_VIDEO_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_VIDEO_")

    # Background ingest jobs run at once; each keeps the embedder busy.
    workers: int = Field(default=1, ge=1)
    # Sampled frames per second of video: a face on screen for one second is seen twice.
    sample_fps: float = Field(default=2.0, gt=0)
    # Frames per embedder call (and between cancellation checks and progress updates).
    batch_frames: int = Field(default=8, ge=1)
    # Embedder calls in flight per video: the next batch decodes and encodes while earlier ones are
    # at the embedder. Frames held per video: batches_in_flight x batch_frames.
    batches_in_flight: int = Field(default=3, ge=1)
    # Frames are decoded at most this large (longest side).
    max_side: int = Field(default=1280, ge=64)
    # Faces are detected as if the frame were this large (longest side), by raising the embedder's
    # smallest face size in proportion; alignment and embedding still see full-resolution pixels.
    detect_side: int = Field(default=640, ge=64)
    # The smallest face (pixels) at detect_side.
    min_face_size: int = Field(default=20, ge=8)
    # Detection confidence a face in a video frame needs (photos keep the embedder's own).
    detection_threshold: float = Field(default=0.9, gt=0, lt=1)
    jpeg_quality: int = Field(default=90, ge=50, le=100)
    # Search by video clip (`POST /search` with `video`): analysed while the client waits, so bounded
    # by the clip's length (read from the container before decoding) and by its size.
    max_query_seconds: float = Field(default=60.0, gt=0)
    max_query_bytes: int = Field(default=200 * MiB, gt=0)
    # Clip queries analysed at once; more wait their turn (each keeps the embedder busy).
    max_concurrent_queries: int = Field(default=2, ge=1)


class DiskSettings(SettingsGroup):
    """Free space on the data directory's disk (``SEARCH_MIN_FREE_BYTES``, ``SEARCH_DISK_RESERVE_BYTES``)."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    # Below this much free space uploads are refused (507) and /healthz says degraded: room for the
    # index, logs, query clips and the store's own growth while an operator makes space.
    min_free_bytes: int = Field(default=512 * MiB, ge=0)
    # Held in a file in the data directory and released when a delete meets a full disk; 0: none.
    reserve_bytes: int = Field(default=16 * MiB, ge=0, validation_alias="SEARCH_DISK_RESERVE_BYTES")


class ScoringSettings(SettingsGroup):
    """How hits are scored (``SEARCH_SCORE_NORMALIZATION``, ``SEARCH_NORMALIZED_MATCH_THRESHOLD``,
    ``SEARCH_COHORT_CHECK_INTERVAL_S``): AS-norm against a cohort of stored faces once the store
    holds enough distinct ones, raw cosine before that or when turned off."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    score_normalization: bool = True
    # Unset: the one calibrated for the embedder's model (it comes with every embedder answer).
    normalized_match_threshold: float | None = Field(default=None, ge=-50.0, le=50.0)
    # How often the service looks for new faces to fill the cohort with (a count query when full).
    cohort_check_interval_s: float = Field(default=10.0, gt=0)


class AccessSettings(SettingsGroup):
    """Who may call the API (``SEARCH_API_KEYS``, ``SEARCH_ALLOWED_HOSTS``, ``SEARCH_CORS_ORIGINS``).

    Keys: ``key:scope`` or ``key:scope:coll1|coll2``, comma-separated (facesearch_common.access).
    No keys: every caller may read and write, allowed only while the service binds to loopback.
    """

    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    api_keys: ApiKeys = Field(default_factory=list)
    # Host headers served (against DNS rebinding); `*` serves any.
    allowed_hosts: Hosts = Field(default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS))
    # Browser origins allowed cross-origin (CORS) and to send state-changing requests; none by default.
    cors_origins: NameList = Field(default_factory=list)


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    port: int = 8000
    data_dir: Path = Field(default=Path("data"), validation_alias="DATA_DIR")
    index_backend: Literal["embedded", "opensearch", "milvus"] = Field(
        default="embedded", validation_alias="INDEX_BACKEND"
    )
    # Cosine similarity at or above which a hit is reported as `match: true`. Unset, the threshold
    # calibrated for the embedder's model is used (it comes with every embedder answer).
    match_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    default_collection: str = "default"

    embedder: EmbedderClientSettings = Field(default_factory=EmbedderClientSettings)
    uploads: UploadSettings = Field(default_factory=UploadSettings)
    hnsw: HnswSettings = Field(default_factory=HnswSettings)
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    disk: DiskSettings = Field(default_factory=DiskSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)

    @model_validator(mode="after")
    def _keys_off_loopback(self) -> Self:
        require_keys_off_loopback(self.host, bool(self.access.api_keys), "SEARCH_HOST", "SEARCH_API_KEYS")
        return self


@lru_cache
def get_settings() -> SearchSettings:
    return SearchSettings()
