"""Every request and response body of the public API.

Field names of the public API (docs/ARCHITECTURE.md) are a contract with clients: add fields,
never rename. Domain records become these models in ``presenters``.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from search_service.domain import Box, JobState, Source, TimeRange

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_K = 20
MAX_K = 1000
# SQLite integers are signed 64-bit: no id or paging cursor lies beyond this one.
MAX_ID = 2**63 - 1
# Limits of the free-text fields a client stores with a photo or video.
MAX_EXTERNAL_ID_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024  # the JSON text as sent, UTF-8
MAX_METADATA_DEPTH = 32  # nested objects and arrays


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise PydanticCustomError("string_control_characters", "must not contain control characters")
    return value


# A client's own id for a photo or video: printable text of bounded length.
ExternalId = Annotated[
    str, StringConstraints(max_length=MAX_EXTERNAL_ID_CHARS), AfterValidator(_no_control_characters)
]


def _reject_constant(name: str) -> Any:
    raise PydanticCustomError(
        "json_invalid", "Invalid JSON: {constant} is not a JSON number", {"constant": name}
    )


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: a JSON number that no float holds
        raise PydanticCustomError(
            "json_invalid", "Invalid JSON: {number} is out of range", {"number": text[:32]}
        )
    return number


def _nesting(value: Any) -> int:
    """How deeply objects and arrays nest in parsed JSON (a scalar: 0), without recursion."""
    depth, level = 0, [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        level = [
            child for item in containers for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def _metadata(value: Any) -> Any:
    """Strict JSON text: no NaN or Infinity (json.loads accepts them; no JSON reader elsewhere does),
    at most MAX_METADATA_BYTES long and MAX_METADATA_DEPTH deep."""
    if not isinstance(value, str | bytes | bytearray):
        return value
    size = len(value.encode() if isinstance(value, str) else value)
    if size > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "json_too_long",
            "metadata is {size} bytes of JSON, the limit is {limit}",
            {"size": size, "limit": MAX_METADATA_BYTES},
        )
    try:
        parsed = json.loads(value, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:
        if isinstance(error, PydanticCustomError):
            raise
        raise PydanticCustomError("json_invalid", "Invalid JSON: {error}", {"error": str(error)}) from None
    if _nesting(parsed) > MAX_METADATA_DEPTH:
        raise PydanticCustomError(
            "json_too_deep", "metadata nests deeper than {limit} levels", {"limit": MAX_METADATA_DEPTH}
        )
    return parsed


# What a client stores with a photo: a JSON object, sent as text.
Metadata = Annotated[dict[str, Any], BeforeValidator(_metadata)]
# An id in a path: a positive 64-bit integer, as the store keeps them.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, naming the offending file where there is one.")


class InvalidRequestResponse(BaseModel):
    detail: list[dict[str, Any]] | str = Field(
        description="FastAPI's list of parameter errors, or a sentence (e.g. no face in the query photo)."
    )


class Face(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    box: Box = Field(description="x1, y1, x2, y2 in pixels of the upright (EXIF-rotated) photo.")
    score: float = Field(description="Detection confidence.")
    landmarks: list[tuple[float, float]] | None = Field(
        default=None, description="Eyes, nose, mouth corners: [[x, y] x 5]."
    )


class Media(BaseModel):
    """What photos and videos share."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    collection: str
    external_id: str | None
    sha256: str = Field(description="Digest of the stored bytes: the same file twice is recognised by it.")
    filename: str | None
    content_type: str
    size_bytes: int
    width: int | None
    height: int | None
    created_at: str


class Image(Media):
    metadata: dict[str, Any]
    faces: list[Face]


class IngestedImage(Image):
    duplicate: bool = Field(description="True when this photo was already stored in the collection.")


class UploadError(BaseModel):
    status: int = Field(ge=400, le=499, description="The status this photo alone would have had.")
    detail: str = Field(description="Why it was refused, naming the file.")


class FailedImage(BaseModel):
    """A photo of a batch that the embedder refused: nothing of it was stored."""

    id: None = Field(default=None, description="null: this photo was not stored.")
    faces: list[Face] = Field(default_factory=list, description="Always empty.")
    duplicate: Literal[False] = False
    error: UploadError


class IngestResponse(BaseModel):
    images: list[IngestedImage | FailedImage] = Field(
        description="One entry per uploaded photo, in upload order: the stored photo, or (`id: null`) "
        "why this one was refused."
    )


class ImageList(BaseModel):
    images: list[Image]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class Hit(BaseModel):
    score: float = Field(description="Cosine similarity of the two faces' embeddings, -1..1.")
    match: bool = Field(
        description="Whether the score of the search's `score_kind` (`score`, or `normalized_score`) "
        "reaches the match threshold."
    )
    normalized_score: float | None = Field(
        default=None,
        description="`score_kind` `as_norm`: the AS-norm score, which ranks the hits and decides `match`; "
        "null for cosine searches.",
    )
    source: Source
    id: int = Field(description="The image id or video id.")
    face_id: int
    external_id: str | None
    collection: str
    box: Box = Field(description="The matched face's box in its photo; videos: in the frame at `best_time`.")
    filename: str | None = Field(description="The photo's or video's file name as uploaded.")
    width: int | None = Field(
        description="The photo's or video's width in pixels, upright: the frame of `box`."
    )
    height: int | None = Field(description="Its height in pixels, upright.")
    time_ranges: list[TimeRange] | None = Field(
        description="Videos: [[start_s, end_s], ...] where this person appears; null for images."
    )
    range_scores: list[float] | None = Field(
        default=None,
        description="Videos: per entry of `time_ranges`, the query's best similarity to the person there.",
    )
    best_time: float | None = Field(
        default=None,
        description="Videos: the second of `box`'s frame: the clearest face of the best-matching track.",
    )
    person: int | None = Field(
        default=None,
        description="Videos: the person's number in the video (one hit per person: its best-scoring face).",
    )
    thumbnail_url: str | None = Field(default=None, description="Videos: the face at `best_time`, as JPEG.")


class QueryFace(BaseModel):
    """A face of the query photo, or a person of the query clip (shown by their clearest face)."""

    box: Box = Field(description="In the query photo; clips: in the frame at `best_time`.")
    score: float = Field(description="Detection confidence of this face in the query photo or clip.")
    hits: list[Hit] = Field(
        description="Best first; up to `k`. Clips: the person is searched with a few of their faces, "
        "and each stored face scores its best similarity to any of them."
    )
    time_ranges: list[TimeRange] | None = Field(
        default=None,
        description="Clips: [[start_s, end_s], ...] where this person appears in the query clip; "
        "null for photos.",
    )
    best_time: float | None = Field(
        default=None, description="Clips: the second of `box`'s frame, the person's clearest face."
    )
    thumbnail_url: str | None = Field(
        default=None,
        description="Clips: that face as a `data:image/jpeg;base64,...` URL (nothing of a query is "
        "stored); null for photos.",
    )


class SearchOrigin(BaseModel):
    """Where the stored face of a search by `face_id` is."""

    source: Source
    id: int = Field(description="The image id or video id.")
    face_id: int
    external_id: str | None
    collection: str
    filename: str | None = Field(description="The photo's or video's file name as uploaded.")
    width: int | None = Field(description="The photo's or video's width in pixels, upright.")
    height: int | None = Field(description="Its height in pixels, upright.")


class SearchResponse(BaseModel):
    faces: list[QueryFace] = Field(
        description="Every face found in the query photo, or every person found in the query clip "
        "(in order of first appearance), with its own hits; a search by `face_id`: that one face, with "
        "its stored box."
    )
    threshold: float = Field(
        description="The match threshold applied, in units of `score_kind`: the request's, else the "
        "service's setting, else the one calibrated for the embedding model."
    )
    score_kind: Literal["cosine", "as_norm"] = Field(
        description="What ranks the hits and decides `match`: `as_norm`, scores normalised against a "
        "cohort of stored faces (once the store holds enough distinct faces, unless the request names "
        "a `threshold`, which is a cosine similarity); `cosine` otherwise."
    )
    query: SearchOrigin | None = Field(
        default=None, description="A search by `face_id`: where that face is; null for a photo or clip."
    )


class SearchParams(BaseModel):
    """Options of `POST /search`, as query parameters or form fields."""

    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="A cosine similarity: this search ranks and matches by cosine."
    )
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN)
    source: Literal["images", "videos", "all"] = "all"
    face_id: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="Search with this stored face instead of a photo or clip: a face id of "
        "`GET /images/{id}`, a hit's `face_id`, or a video person's.",
    )


class CollectionInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    images: int
    videos: int
    faces: int


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class IndexStatus(BaseModel):
    backend: str
    ok: bool
    faces: int
    details: dict[str, Any]


class EmbedderStatus(BaseModel):
    ok: bool
    model: str | None = None
    dimension: int | None = None
    match_threshold: float | None = Field(default=None, description="Calibrated for the model.")
    normalized_threshold: float | None = Field(
        default=None, description="Calibrated for the model's AS-norm scores; null where it was not."
    )
    error: str | None = None


class DiskStatus(BaseModel):
    ok: bool = Field(description="At least `min_free_bytes` free: uploads are accepted.")
    free_bytes: int = Field(description="Free on the data directory's disk.")
    min_free_bytes: int = Field(description="`SEARCH_MIN_FREE_BYTES`: below it uploads are refused (507).")
    reserve_bytes: int = Field(
        description="Held in reserve so that deletes commit on a full disk (`SEARCH_DISK_RESERVE_BYTES`); "
        "0 while spent, until there is room again."
    )


class CohortInfo(BaseModel):
    """The cohort of stored faces that search scores are normalised against (AS-norm)."""

    model_config = ConfigDict(from_attributes=True)

    active: bool = Field(
        description="Full enough to normalise with: searches score by AS-norm (`score_kind`) when a "
        "normalised threshold is known (`embedder.normalized_threshold` or "
        "`SEARCH_NORMALIZED_MATCH_THRESHOLD`) and the request names no (cosine) `threshold`."
    )
    enabled: bool = Field(description="`SEARCH_SCORE_NORMALIZATION`.")
    members: int = Field(description="Distinct stored faces in the cohort.")
    size: int = Field(description="Its full size.")
    minimum: int = Field(description="Members from which it is used.")


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok; degraded: the embedder is unreachable, or the disk is below its free-space "
        "floor (stored data is still served; see `problems`); down: the index cannot serve."
    )
    problems: list[str] = Field(
        default_factory=list,
        description='Why the status is not ok, one line each, e.g. "disk: 12 MiB free, floor 512 MiB".',
    )
    index: IndexStatus
    embedder: EmbedderStatus
    disk: DiskStatus
    score_cohort: CohortInfo


class VideoAccepted(BaseModel):
    job_id: int = Field(description="Follow the analysis at `GET /jobs/{job_id}`.")
    video_id: int
    duplicate: bool = Field(
        description="The collection already held this video (same bytes): its job is returned, or a new "
        "one when the last failed or was cancelled."
    )


class Job(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    video_id: int
    state: JobState
    progress: float = Field(ge=0, le=1, description="Fraction of the video analysed.")
    frames_processed: int = Field(description="Sampled frames analysed so far.")
    faces_found: int = Field(description="Faces detected in them (every sighting counts).")
    error: str | None = Field(description="Why the job failed.")
    attempts: int = Field(description="Runs started: a restart of the service re-runs a job from scratch.")
    timings: dict[str, float] | None = Field(
        description="Done jobs: wall seconds in decode, detect_embed (the embedder), tracking, and in total."
    )
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


class JobList(BaseModel):
    jobs: list[Job]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class VideoTrack(BaseModel):
    id: int
    start: float = Field(description="Seconds.")
    end: float
    faces: int = Field(description="Sampled frames in which the face was seen.")
    best_time: float = Field(description="The second of the clearest face, shown by `thumbnail_url`.")
    box: Box = Field(description="That face's box, in source pixels.")
    thumbnail_url: str | None


class VideoPerson(BaseModel):
    index: int
    time_ranges: list[TimeRange] = Field(description="[[start_s, end_s], ...], sorted and disjoint.")
    tracks: list[VideoTrack] = Field(description="Its continuous appearances, grouped into this person.")
    thumbnail_url: str | None = Field(description="The person's clearest face.")
    face_id: int = Field(
        description="A stored vector of the person (of their clearest track): search with it as "
        "`POST /search` with `face_id`."
    )


class Video(Media):
    duration: float | None = Field(description="Seconds; null (as fps, width, height) until analysed.")
    fps: float | None
    state: JobState | None = Field(description="The state of the video's latest job.")
    job_id: int | None
    error: str | None = Field(description="Why the latest job failed.")
    people: list[VideoPerson] = Field(description="Empty until the analysis is done.")


class VideoForm(BaseModel):
    """The text fields of `POST /videos`."""

    collection: str | None = Field(None, pattern=COLLECTION_PATTERN)
    external_id: ExternalId | None = None


class VideoList(BaseModel):
    videos: list[Video]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")
