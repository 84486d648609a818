"""Embedder-specific Prometheus metrics (HTTP counts and latency come from facesearch_common)."""

from prometheus_client import Histogram

MODEL_SECONDS = Histogram(
    "embedder_model_seconds",
    "Wall time of one model stage per call",
    ["stage"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FACES_PER_IMAGE = Histogram(
    "embedder_faces_per_image", "Faces found per image", buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100)
)
IMAGE_PIXELS = Histogram(
    "embedder_image_megapixels", "Decoded image size", buckets=(0.1, 0.3, 1, 2, 5, 10, 20, 40)
)
