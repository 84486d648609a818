"""HTTP client of the embedder service (``POST /faces``, ``GET /models``, ``GET /healthz``).

One pooled ``httpx.AsyncClient`` for the service's life. Transient failures (connection errors,
timeouts, 429 and 5xx) are retried with exponential backoff (facesearch_common.retry) and end as
EmbedderUnavailableError; the embedder's verdicts on an upload (400/413/415/422) are not retried
and become EmbedderRejectedError naming the offending file. Every ``/faces`` answer names the
model that made its embeddings and that model's match threshold; they come back with the faces.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import structlog
import tenacity
from prometheus_client import Counter

from facesearch_common.retry import backoff
from search_service.domain import DetectedFace, DetectedImage, Detection, EmbeddingModel, Upload
from search_service.errors import (
    EmbedderProtocolError,
    EmbedderRejectedError,
    EmbedderUnavailableError,
    RejectionReason,
)
from search_service.settings import EmbedderClientSettings

log = structlog.get_logger(__name__)

EMBEDDER_ATTEMPTS = Counter(
    "facesearch_embedder_attempts_total", "Requests sent to the embedder, by outcome", ["outcome"]
)

# Statuses that judge the upload itself; anything else non-2xx is the embedder's problem, not the client's.
_REJECTIONS: dict[int, RejectionReason] = {
    400: "unreadable",
    413: "too_large",
    415: "unsupported",
    422: "invalid",
}


class _Transient(Exception):
    """An answer worth retrying (429, 5xx)."""


@dataclass(frozen=True)
class EmbedderStatus:
    """What the health check learnt: the model when the embedder answers, else why not."""

    model: EmbeddingModel | None
    match_threshold: float | None
    problem: str | None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else str(detail)


def _parse_image(entry: dict[str, Any], dimension: int) -> DetectedImage:
    faces = []
    for face in entry["faces"]:
        embedding = np.asarray(face["embedding"], np.float32)
        if embedding.shape != (dimension,):
            raise EmbedderProtocolError(
                f"embedder sent a {embedding.size}-d embedding for a {dimension}-d model"
            )
        # Re-normalise: the JSON round trip loses a little, and the index scores by inner product.
        embedding /= max(float(np.linalg.norm(embedding)), 1e-12)
        box = face["box"]
        faces.append(
            DetectedFace(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(face["score"]),
                landmarks=face.get("landmarks"),
                embedding=embedding,
            )
        )
    return DetectedImage(width=int(entry["width"]), height=int(entry["height"]), faces=faces)


def _model(payload: dict[str, Any], name: str, dimension: str) -> tuple[EmbeddingModel, float]:
    return EmbeddingModel(str(payload[name]), int(payload[dimension])), float(payload["match_threshold"])


class EmbedderClient:
    def __init__(
        self, settings: EmbedderClientSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = settings.url
        self._settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.url,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def detect(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> Detection:
        """Faces with embeddings for every upload, in order, batching several photos per call.

        ``min_face_size`` (pixels) and ``threshold`` (detection confidence) override the embedder's
        defaults when given. Raises EmbedderProtocolError if the batches disagree on the model.
        """
        params: dict[str, str | int | float] = {"embeddings": "true", "landmarks": "true"}
        if min_face_size is not None:
            params["min_face_size"] = min_face_size
        if threshold is not None:
            params["threshold"] = threshold
        detections = [await self._detect_batch(batch, params) for batch in self._batches(uploads)]
        if not detections:
            raise ValueError("detect needs at least one upload")
        first = detections[0]
        if any(d.model != first.model for d in detections):
            raise EmbedderProtocolError("the embedder changed its model in the middle of a request")
        return Detection(first.model, first.match_threshold, [i for d in detections for i in d.images])

    async def status(self) -> EmbedderStatus:
        """The embedder's model when it answers (one quick ``GET /models``), else why not."""
        try:
            response = await self._client.get("/models", timeout=2.0)
            if response.status_code != 200:
                return EmbedderStatus(None, None, f"GET /models answered {response.status_code}")
            model, threshold = _model(response.json(), "embedding_model", "embedding_dimension")
            return EmbedderStatus(model, threshold, None)
        except httpx.HTTPError as error:
            return EmbedderStatus(None, None, str(error) or type(error).__name__)
        except (ValueError, KeyError, TypeError) as error:
            return EmbedderStatus(None, None, f"GET /models: unexpected answer ({error!r})")

    def _batches(self, uploads: Sequence[Upload]) -> Iterator[list[Upload]]:
        batch: list[Upload] = []
        size = 0
        for upload in uploads:
            full = len(batch) == self._settings.batch_images
            if batch and (full or size + len(upload.data) > self._settings.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(upload)
            size += len(upload.data)
        if batch:
            yield batch

    async def _detect_batch(self, uploads: list[Upload], params: dict[str, str | int | float]) -> Detection:
        response = await self._request(
            "POST",
            "/faces",
            params=params,
            files=[("image", (u.filename, u.data, u.content_type)) for u in uploads],
        )
        reason = _REJECTIONS.get(response.status_code)
        if reason is not None:
            if len(uploads) > 1:
                # The verdict covers the whole batch; resend one by one to name the culprit.
                for upload in uploads:
                    await self._detect_batch([upload], params)
            name = uploads[0].filename if len(uploads) == 1 else f"a batch of {len(uploads)} photos"
            raise EmbedderRejectedError(f"{name}: {_detail(response)}", reason)
        if response.status_code != 200:
            raise EmbedderProtocolError(f"embedder answered {response.status_code}: {_detail(response)}")
        try:
            payload = response.json()
            model, threshold = _model(payload, "model", "dimension")
            images = [_parse_image(entry, model.dimension) for entry in payload["images"]]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise EmbedderProtocolError(f"embedder sent an unexpected answer: {error!r}") from error
        if len(images) != len(uploads):
            raise EmbedderProtocolError(f"embedder answered for {len(images)} of {len(uploads)} photos")
        return Detection(model, threshold, images)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying transient failures with exponential backoff; other answers are returned."""
        policy = backoff(
            f"embedder {method} {path}",
            retries=self._settings.retries,
            backoff_s=self._settings.backoff_s,
            retry_on=(httpx.TransportError, _Transient),
        )
        try:
            async for attempt in tenacity.AsyncRetrying(**policy):
                with attempt:
                    try:
                        response = await self._client.request(method, path, **kwargs)
                    except httpx.TransportError:
                        EMBEDDER_ATTEMPTS.labels("transient_error").inc()
                        raise
                    if response.status_code == 429 or response.status_code >= 500:
                        EMBEDDER_ATTEMPTS.labels("transient_error").inc()
                        raise _Transient(f"HTTP {response.status_code}: {_detail(response)}")
                    EMBEDDER_ATTEMPTS.labels("answered").inc()
                    return response
        except (httpx.TransportError, _Transient) as error:
            problem = f"{type(error).__name__}: {error}".rstrip(": ")
            attempts = self._settings.retries + 1
            # The address is for the operator's log; clients are not told the internal network.
            log.warning("embedder unavailable", url=self.url, attempts=attempts, problem=problem)
            raise EmbedderUnavailableError(
                f"the embedder is unavailable ({attempts} attempts; last: {problem})"
            ) from error
        raise AssertionError("unreachable: tenacity either returns or re-raises")
