"""How the OpenSearch backend talks to the cluster: one client, bounded retries, and one
translation of "not now" failures into ``IndexUnavailableError``.

Retries follow the product's policy (``facesearch_common.retry``, tenacity); the transport's own
retries are off so that there is one loop, with backoff. A retry goes to the next node when the
URL lists several (the transport marks a failed node dead). Every request this backend sends is
safe to repeat: reads, bulk writes that name their document ids, deletes (a repeated delete meets
404s or version conflicts, both ignored), and index creation (a create whose first attempt went
through is recognised and adopted by the caller).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
import tenacity
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection
from opensearchpy.exceptions import ConnectionError as ClusterUnreachable
from opensearchpy.exceptions import TransportError
from opensearchpy.helpers import BulkIndexError, streaming_bulk

from facesearch_common.retry import backoff, until_up
from search_service.errors import IndexUnavailableError
from search_service.settings import OpenSearchSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")
Action = dict[str, Any]

# OpenSearch's answers that mean "not now" rather than "wrong request": a full write queue
# (429), or a proxy or node down (502, 503, 504).
UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})
# Under the server's default http.max_content_length (100 MB), which rejects larger bulks.
_MAX_BULK_BYTES = 50 * 1024 * 1024
_PROGRESS_EVERY = 50_000


@contextmanager
def unavailable_on_transient(action: str) -> Iterator[None]:
    """Turn the client's errors that mean "try later" into IndexUnavailableError; let the rest through."""
    try:
        yield
    except ClusterUnreachable as error:  # includes timeouts
        raise IndexUnavailableError(f"OpenSearch unreachable while {action}: {error}") from error
    except TransportError as error:
        if error.status_code in UNAVAILABLE_STATUSES:
            reason = f"{error.status_code} {error.error}"
            raise IndexUnavailableError(f"OpenSearch failed {action}: {reason}") from error
        raise
    except BulkIndexError as error:
        statuses = {item.get("status") for failure in error.errors for item in failure.values()}
        if statuses & UNAVAILABLE_STATUSES:
            raise IndexUnavailableError(f"OpenSearch failed {action}: {error}") from error
        raise


def _chunks(actions: Iterable[Action], size: int) -> Iterator[list[Action]]:
    iterator = iter(actions)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class Cluster:
    """The client of one backend handle, kept for its life (it pools keep-alive connections)."""

    def __init__(
        self, settings: OpenSearchSettings, connection_class: type[Connection] | None = None
    ) -> None:
        """``connection_class`` replaces the HTTP connection (tests run an in-process cluster)."""
        self._settings = settings
        options: dict[str, Any] = {} if connection_class is None else {"connection_class": connection_class}
        self.client = OpenSearch(
            hosts=[host.strip() for host in settings.url.split(",") if host.strip()],
            timeout=settings.timeout_s,
            max_retries=0,
            http_auth=settings.http_auth(),
            verify_certs=settings.verify_certs,
            ca_certs=str(settings.ca_certs) if settings.ca_certs else None,
            **options,
        )

    def close(self) -> None:
        self.client.close()

    def once(self, action: str, send: Callable[[OpenSearch], T]) -> T:
        """One attempt; failures that mean "not now" raise IndexUnavailableError."""
        with unavailable_on_transient(action):
            return send(self.client)

    def request(self, action: str, send: Callable[[OpenSearch], T]) -> T:
        """Like ``once``, retried ``settings.retries`` times with backoff while the cluster is unavailable."""
        policy = backoff(
            f"{action} on OpenSearch",
            retries=self._settings.retries,
            backoff_s=self._settings.backoff_s,
            retry_on=IndexUnavailableError,
        )
        return tenacity.Retrying(**policy)(self.once, action, send)

    def wait_until_up(self) -> None:
        """At start the cluster may still be booting (compose starts everything at once): poll its
        health for up to ``connect_wait_s``, then give up with IndexUnavailableError."""
        policy = until_up(
            "connecting to OpenSearch",
            retry_on=IndexUnavailableError,
            wait_s=self._settings.connect_wait_s,
            backoff_s=self._settings.backoff_s,
        )
        timeout = self._settings.timeout_s
        tenacity.Retrying(**policy)(
            self.once, "connecting", lambda c: c.cluster.health(request_timeout=timeout)
        )

    def bulk(
        self,
        actions: Iterable[Action],
        *,
        action: str,
        chunk: int,
        refresh: str | None = None,
        ignore_status: tuple[int, ...] = (),
        progress: bool = False,
    ) -> int:
        """Send actions ``chunk`` at a time (fewer where a chunk would exceed the byte limit), each
        chunk retried whole while the cluster is unavailable; returns how many succeeded. Items
        refused for another reason raise BulkIndexError."""
        extra: dict[str, Any] = {} if refresh is None else {"refresh": refresh}

        def send(client: OpenSearch, items: list[Action]) -> int:
            results = streaming_bulk(
                client,
                items,
                chunk_size=len(items),
                max_chunk_bytes=_MAX_BULK_BYTES,
                ignore_status=ignore_status,
                request_timeout=self._settings.bulk_timeout_s,
                **extra,
            )
            return sum(ok for ok, _ in results)

        done = 0
        for items in _chunks(actions, chunk):
            before = done
            done += self.request(action, functools.partial(send, items=items))
            if progress and done // _PROGRESS_EVERY > before // _PROGRESS_EVERY:
                log.info("opensearch bulk load", faces=done)
        return done
