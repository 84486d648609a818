"""Embedder-specific Prometheus metrics (HTTP counts and latency come from facesearch_common)."""

from prometheus_client import Counter, Gauge, Histogram

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
MODEL_QUEUE_SECONDS = Histogram(
    "embedder_model_queue_seconds",
    "Wait for a lane's lock before one model run",
    ["lane"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REQUESTS_ADMITTED = Gauge(
    "embedder_requests_admitted",
    "/faces requests admitted and not yet answered: queued for the models or running",
)
REQUESTS_REJECTED = Counter(
    "embedder_requests_rejected_total",
    "/faces requests answered 503: the admission queue was full, or the deadline passed",
    ["reason"],
)
DOWNSCALED_DETECTIONS = Counter(
    "embedder_downscaled_detections_total",
    "Images detected on a downscaled copy (EMBEDDER_DETECT_MAX_SIDE, or the detector's own input side)",
)
MODEL_INPUT_SHAPES = Gauge(
    "embedder_model_input_shapes",
    "Distinct input shapes a model has run on (on a GPU each new one costs a search and allocations)",
    ["model"],
)
BATCH_ITEMS = Histogram(
    "embedder_batch_items",
    "Items (images to detect, groups of face chips to embed) that share one model run",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_WAIT_SECONDS = Histogram(
    "embedder_batch_wait_seconds",
    "From an item's submission until its batch's run starts: batch-mates and the lane's lock",
    ["batcher"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
