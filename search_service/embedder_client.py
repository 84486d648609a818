"""HTTP client of the embedder service (``POST /faces``, ``GET /models``, ``GET /healthz``).

One pooled ``httpx.AsyncClient`` for the service's life. Transient failures (connection errors,
timeouts, 429 and 5xx) are retried with exponential backoff and end as a 503 to our client;
the embedder's verdicts on an upload (400/413/415/422) are not retried and reach our client with
the same status and the offending file named.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import structlog
from prometheus_client import Counter

from search_service.domain import DetectedFace, DetectedImage, EmbeddingModel, Upload
from search_service.errors import EmbedderProtocolError, EmbedderRejectedError, EmbedderUnavailableError
from search_service.settings import SearchSettings

log = structlog.get_logger(__name__)

EMBEDDER_ATTEMPTS = Counter(
    "facesearch_embedder_attempts_total", "Requests sent to the embedder, by outcome", ["outcome"]
)

# Statuses that judge the upload itself; anything else non-2xx is the embedder's problem, not the client's.
_CLIENT_ERRORS = frozenset({400, 413, 415, 422})


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else str(detail)


def _parse_image(entry: dict[str, Any]) -> DetectedImage:
    faces = []
    for face in entry["faces"]:
        embedding = np.asarray(face["embedding"], np.float32)
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


class EmbedderClient:
    def __init__(self, settings: SearchSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = settings.embedder_url
        self._retries = settings.embedder_retries
        self._backoff_s = settings.embedder_backoff_s
        self._batch_images = settings.embedder_batch_images
        self._batch_bytes = settings.embedder_batch_bytes
        self._model_ttl_s = settings.embedder_model_ttl_s
        self._client = httpx.AsyncClient(
            base_url=settings.embedder_url,
            timeout=httpx.Timeout(
                settings.embedder_read_timeout_s, connect=settings.embedder_connect_timeout_s
            ),
            transport=transport,
        )
        self._model: EmbeddingModel | None = None
        self._model_fetched_at = 0.0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def detect(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> list[DetectedImage]:
        """Faces with embeddings for every upload, in order, batching several photos per call.

        ``min_face_size`` (pixels) and ``threshold`` (detection confidence) override the embedder's
        defaults when given.
        """
        params: dict[str, str | int | float] = {"embeddings": "true", "landmarks": "true"}
        if min_face_size is not None:
            params["min_face_size"] = min_face_size
        if threshold is not None:
            params["threshold"] = threshold
        results: list[DetectedImage] = []
        for batch in self._batches(uploads):
            results.extend(await self._detect_batch(batch, params))
        return results

    async def model(self) -> EmbeddingModel:
        """The embedder's model, cached for a while: it only changes when the embedder restarts."""
        if self._model is None or time.monotonic() - self._model_fetched_at >= self._model_ttl_s:
            response = await self._request("GET", "/models")
            try:
                response.raise_for_status()
                payload = response.json()
                self._model = EmbeddingModel(
                    str(payload["embedding_model"]), int(payload["embedding_dimension"])
                )
            except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as error:
                raise EmbedderProtocolError(f"embedder GET /models: unexpected answer ({error})") from error
            self._model_fetched_at = time.monotonic()
        return self._model

    async def health(self) -> tuple[EmbeddingModel | None, str | None]:
        """(model, None) when the embedder answers, (None, reason) when not."""
        try:
            response = await self._client.get("/healthz", timeout=2.0)
            if response.status_code != 200:
                return None, f"GET /healthz answered {response.status_code}"
            return await self.model(), None
        except (httpx.HTTPError, EmbedderUnavailableError, EmbedderProtocolError) as error:
            return None, str(error) or type(error).__name__

    def _batches(self, uploads: Sequence[Upload]) -> Iterator[list[Upload]]:
        batch: list[Upload] = []
        size = 0
        for upload in uploads:
            if batch and (len(batch) == self._batch_images or size + len(upload.data) > self._batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(upload)
            size += len(upload.data)
        if batch:
            yield batch

    async def _detect_batch(
        self, uploads: list[Upload], params: dict[str, str | int | float]
    ) -> list[DetectedImage]:
        response = await self._request(
            "POST",
            "/faces",
            params=params,
            files=[("image", (u.filename, u.data, u.content_type)) for u in uploads],
        )
        if response.status_code in _CLIENT_ERRORS:
            if len(uploads) > 1:
                # The verdict covers the whole batch; resend one by one to name the culprit.
                for upload in uploads:
                    await self._detect_batch([upload], params)
            name = uploads[0].filename if len(uploads) == 1 else f"a batch of {len(uploads)} photos"
            raise EmbedderRejectedError(f"{name}: {_detail(response)}", response.status_code)
        if response.status_code != 200:
            raise EmbedderProtocolError(f"embedder answered {response.status_code}: {_detail(response)}")
        try:
            images = [_parse_image(entry) for entry in response.json()["images"]]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise EmbedderProtocolError(f"embedder sent an unexpected answer: {error!r}") from error
        if len(images) != len(uploads):
            raise EmbedderProtocolError(f"embedder answered for {len(images)} of {len(uploads)} photos")
        return images

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying transient failures with exponential backoff; other answers are returned."""
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}".rstrip(": ")
            else:
                if response.status_code != 429 and response.status_code < 500:
                    EMBEDDER_ATTEMPTS.labels("answered").inc()
                    return response
                problem = f"HTTP {response.status_code}: {_detail(response)}"
            EMBEDDER_ATTEMPTS.labels("transient_error").inc()
            log.warning("embedder request failed", path=path, attempt=attempt + 1, problem=problem)
        raise EmbedderUnavailableError(
            f"embedder at {self.url} unavailable ({self._retries + 1} attempts; last: {problem})"
        )
