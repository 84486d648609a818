"""Video ingest without HTTP or storage: decode and sample frames, track faces, group them into people."""

from search_service.video.decoder import (
    DEFAULT_SAMPLE_FPS,
    SampledFrame,
    VideoDecodeError,
    VideoInfo,
    probe,
    sample_frames,
)
from search_service.video.pipeline import (
    DetectAndEmbed,
    ProgressCallback,
    VideoCancelled,
    process_video,
)
from search_service.video.tracker import FaceTracker, TrackerConfig

__all__ = [
    "DEFAULT_SAMPLE_FPS",
    "DetectAndEmbed",
    "FaceTracker",
    "ProgressCallback",
    "SampledFrame",
    "TrackerConfig",
    "VideoCancelled",
    "VideoDecodeError",
    "VideoInfo",
    "probe",
    "process_video",
    "sample_frames",
]
