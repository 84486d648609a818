"""Prometheus request metrics and the ``/metrics`` endpoint, the same for both services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter("http_requests_total", "HTTP requests handled", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

metrics_router = APIRouter()


@metrics_router.get("/metrics", include_in_schema=True, tags=["ops"], response_class=Response)
def metrics() -> Response:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def instrument(app: FastAPI, responses: dict[int | str, dict[str, Any]] | None = None) -> None:
    """Count and time every request, labelled by route template (not raw path: ids would explode labels),
    and serve ``/metrics``; ``responses`` documents what else ``/metrics`` may answer (access checks)."""

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
            REQUESTS.labels(request.method, template, str(status)).inc()

    app.include_router(metrics_router, responses=responses)
