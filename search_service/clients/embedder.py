"""HTTP client of the embedder service (``POST /faces``, ``GET /models``).

One pooled ``httpx.AsyncClient`` for the service's life. Only what means "try later" is retried,
with exponential backoff or the embedder's ``Retry-After`` (capped): transport failures other
than a read timeout, 503 and 429; they end as EmbedderUnavailableError. The embedder's verdicts
on an upload (400/413/415/422) are never retried: each refused photo gets its own
EmbedderRejectedError (a batch refused as a whole is halved until every verdict names its photo).
Any other answer (a 500, a 404) is the embedder's fault: EmbedderProtocolError at once.

A circuit breaker (``clients.breaker``) guards every call: a background probe asks ``GET /models``
every ``probe_interval_s``; after ``failures_to_open`` failures in a row (probes, or calls that
failed in transport) calls fail at once with EmbedderUnavailableError, and calls in flight are
abandoned, until a probe succeeds. The probe's last answer is what ``status()`` reports.

Every ``/faces`` answer names the model that made its embeddings and that model's match
threshold; they come back with the faces.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import structlog
import tenacity
from prometheus_client import Counter

from facesearch_common.retry import backoff
from search_service.clients.breaker import CircuitBreaker, CircuitOpenError
from search_service.domain import (
    DetectedFace,
    DetectedImage,
    Detection,
    EmbeddingModel,
    ModelThresholds,
    Upload,
)
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
# Answers that mean "try later"; any other 5xx is a fault that asking again would only repeat.
_TRY_LATER = frozenset({429, 503})


class _Transient(Exception):
    """An answer worth retrying (503, 429), and how long it asked us to wait, if it said."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retryable(error: BaseException) -> bool:
    # A read timeout means the embedder took the work and did not finish it within read_timeout_s:
    # sending it again doubles the load on an embedder already too slow, and multiplies the wait.
    return isinstance(error, _Transient | httpx.TransportError) and not isinstance(error, httpx.ReadTimeout)


def _retry_after_s(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), if there is a valid one."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


@dataclass(frozen=True)
class EmbedderStatus:
    """What the health check learnt: the model when the embedder answers, else why not."""

    model: EmbeddingModel | None
    thresholds: ModelThresholds | None
    problem: str | None


@dataclass(frozen=True)
class Outcomes:
    """The embedder's answer for each upload, in order: its faces, or its verdict on that photo."""

    model: EmbeddingModel | None  # None when it refused every upload
    thresholds: ModelThresholds | None
    images: list[DetectedImage | EmbedderRejectedError]


def _merge(parts: Sequence[Outcomes]) -> Outcomes:
    """Outcomes of consecutive calls as one; they must agree on the model."""
    answered = [part for part in parts if part.model is not None]
    if any(part.model != answered[0].model for part in answered):
        raise EmbedderProtocolError("the embedder changed its model in the middle of a request")
    first = answered[0] if answered else parts[0]
    return Outcomes(first.model, first.thresholds, [image for part in parts for image in part.images])


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else str(detail)


def _problem(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".rstrip(": ")


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


def _model(payload: dict[str, Any], name: str, dimension: str) -> tuple[EmbeddingModel, ModelThresholds]:
    normalized = payload.get("normalized_threshold")  # absent from embedders older than AS-norm
    thresholds = ModelThresholds(
        float(payload["match_threshold"]), None if normalized is None else float(normalized)
    )
    return EmbeddingModel(str(payload[name]), int(payload[dimension])), thresholds


class EmbedderClient:
    def __init__(
        self, settings: EmbedderClientSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.url,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            transport=transport,
            headers=None
            if settings.api_key is None
            else {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"},
        )
        self._breaker = CircuitBreaker("embedder", settings.failures_to_open)
        self._probe: asyncio.Task[None] | None = None
        # When the probe last ended (time.monotonic()), and what it found.
        self._probed: tuple[float, EmbedderStatus] | None = None

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.wait({self._probe})
        await self._client.aclose()

    def start(self) -> None:
        """Start the health probe that feeds the circuit breaker (``aclose`` stops it). A client
        that is never started (a one-off in a tool) never opens its circuit."""
        self._probe = asyncio.create_task(self._probe_forever(), name="embedder health probe")

    async def detect(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> Detection:
        """Faces with embeddings for every upload, in order, batching several photos per call.

        ``min_face_size`` (pixels) and ``threshold`` (detection confidence) override the embedder's
        defaults when given. Raises the first refused photo's EmbedderRejectedError, and
        EmbedderProtocolError if the batches disagree on the model.
        """
        outcomes = await self.detect_each(uploads, min_face_size=min_face_size, threshold=threshold)
        images: list[DetectedImage] = []
        for image in outcomes.images:
            if isinstance(image, EmbedderRejectedError):
                raise image
            images.append(image)
        if outcomes.model is None or outcomes.thresholds is None:
            raise AssertionError("unreachable: every photo was answered, so the model was named")
        return Detection(outcomes.model, outcomes.thresholds, images)

    async def detect_each(
        self, uploads: Sequence[Upload], *, min_face_size: int | None = None, threshold: float | None = None
    ) -> Outcomes:
        """As ``detect``, except that a photo the embedder refuses fails only itself: its entry is
        the EmbedderRejectedError naming it. Up to ``batches_in_flight`` batches are sent at once."""
        if not uploads:
            raise ValueError("detect needs at least one upload")
        params: dict[str, str | int | float] = {"embeddings": "true", "landmarks": "true"}
        if min_face_size is not None:
            params["min_face_size"] = min_face_size
        if threshold is not None:
            params["threshold"] = threshold
        slots = asyncio.Semaphore(self._settings.batches_in_flight)

        async def detect_batch(batch: list[Upload]) -> Outcomes:
            async with slots:
                return await self._detect_batch(batch, params)

        tasks = [asyncio.ensure_future(detect_batch(batch)) for batch in self._batches(uploads)]
        try:
            # In order; the first failure of a whole batch fails the request and stops the others.
            return _merge(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)  # nothing of this request left talking to the embedder

    async def status(self) -> EmbedderStatus:
        """The embedder's model when it answers, else why not: the probe's last finding while it is
        fresh, else one quick ``GET /models``."""
        if self._probed is not None:
            probed_at, status = self._probed
            # A probe ends at most this long after the previous one, however it ends.
            cadence = self._settings.probe_interval_s + self._settings.probe_timeout_s
            if time.monotonic() - probed_at <= 2 * cadence:
                return status
        return await self._fetch_status()

    async def _fetch_status(self) -> EmbedderStatus:
        timeout = self._settings.probe_timeout_s
        try:
            # httpx's timeout bounds each read; this bounds the whole exchange.
            async with asyncio.timeout(timeout):
                response = await self._client.get("/models", timeout=timeout)
            if response.status_code != 200:
                return EmbedderStatus(None, None, f"GET /models answered {response.status_code}")
            model, thresholds = _model(response.json(), "embedding_model", "embedding_dimension")
            return EmbedderStatus(model, thresholds, None)
        except TimeoutError:
            return EmbedderStatus(None, None, f"GET /models: no answer within {timeout} s")
        except httpx.HTTPError as error:
            return EmbedderStatus(None, None, str(error) or type(error).__name__)
        except (ValueError, KeyError, TypeError) as error:
            return EmbedderStatus(None, None, f"GET /models: unexpected answer ({error!r})")

    async def _probe_forever(self) -> None:
        interval = self._settings.probe_interval_s
        while True:
            started = time.monotonic()
            try:
                status = await self._fetch_status()
            except Exception as error:  # a dead probe would leave the circuit as it is, for good
                log.exception("embedder health probe failed")
                status = EmbedderStatus(None, None, _problem(error))
            self._probed = (time.monotonic(), status)
            if status.problem is None:
                self._breaker.success()
            else:
                self._breaker.failure(status.problem)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

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

    async def _detect_batch(self, uploads: list[Upload], params: dict[str, str | int | float]) -> Outcomes:
        response = await self._request(
            "POST",
            "/faces",
            params=params,
            files=[("image", (u.filename, u.data, u.content_type)) for u in uploads],
        )
        reason = _REJECTIONS.get(response.status_code)
        if reason is not None:
            if len(uploads) == 1:
                refusal = EmbedderRejectedError(f"{uploads[0].filename}: {_detail(response)}", reason)
                return Outcomes(None, None, [refusal])
            # The verdict covers the whole batch: halve it until each verdict names its photo.
            half = len(uploads) // 2
            outcomes = _merge(
                [
                    await self._detect_batch(uploads[:half], params),
                    await self._detect_batch(uploads[half:], params),
                ]
            )
            if not any(isinstance(image, EmbedderRejectedError) for image in outcomes.images):
                log.warning(
                    "the embedder refused a batch that it took in parts: lower "
                    "SEARCH_EMBEDDER_BATCH_IMAGES or SEARCH_EMBEDDER_BATCH_BYTES",
                    photos=len(uploads),
                    status=response.status_code,
                    detail=_detail(response),
                )
            return outcomes
        if response.status_code != 200:
            raise EmbedderProtocolError(f"embedder answered {response.status_code}: {_detail(response)}")
        try:
            payload = response.json()
            model, thresholds = _model(payload, "model", "dimension")
            images = [_parse_image(entry, model.dimension) for entry in payload["images"]]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise EmbedderProtocolError(f"embedder sent an unexpected answer: {error!r}") from error
        if len(images) != len(uploads):
            raise EmbedderProtocolError(f"embedder answered for {len(images)} of {len(uploads)} photos")
        return Outcomes(model, thresholds, list(images))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying what means "try later"; other answers are returned. Fails at once while
        the circuit is open, and gives up the moment it opens."""
        try:
            return await self._breaker.call(self._send(method, path, **kwargs))
        except CircuitOpenError as error:
            EMBEDDER_ATTEMPTS.labels("circuit_open").inc()
            log.warning("embedder circuit open", url=self._settings.url, problem=str(error))
            raise EmbedderUnavailableError(
                f"the embedder is unavailable (it fails its health checks; last: {error})"
            ) from error

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        exponential = backoff(
            f"embedder {method} {path}",
            retries=self._settings.retries,
            backoff_s=self._settings.backoff_s,
            retry_on=(httpx.TransportError, _Transient),
        )
        cap = self._settings.retry_after_max_s

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, _Transient) and error.retry_after_s is not None:
                return min(error.retry_after_s, cap)
            return float(exponential["wait"](state))

        policy = {**exponential, "retry": tenacity.retry_if_exception(_retryable), "wait": wait}
        attempts = 0
        try:
            async for attempt in tenacity.AsyncRetrying(**policy):
                with attempt:
                    attempts += 1
                    try:
                        response = await self._client.request(method, path, **kwargs)
                    except httpx.TransportError as error:
                        EMBEDDER_ATTEMPTS.labels("transient_error").inc()
                        if self._probe is not None:  # only a probe can close the circuit again
                            self._breaker.failure(_problem(error))
                        raise
                    self._breaker.success()  # it answered: alive, whatever it said
                    if response.status_code in _TRY_LATER:
                        EMBEDDER_ATTEMPTS.labels("transient_error").inc()
                        message = f"HTTP {response.status_code}: {_detail(response)}"
                        raise _Transient(message, _retry_after_s(response))
                    EMBEDDER_ATTEMPTS.labels("answered").inc()
                    return response
        except (httpx.TransportError, _Transient) as error:
            problem = _problem(error)
            # The address is for the operator's log; clients are not told the internal network.
            log.warning("embedder unavailable", url=self._settings.url, attempts=attempts, problem=problem)
            raise EmbedderUnavailableError(
                f"the embedder is unavailable ({attempts} attempt{'s' * (attempts > 1)}; last: {problem})"
            ) from error
        raise AssertionError("unreachable: tenacity either returns or re-raises")
