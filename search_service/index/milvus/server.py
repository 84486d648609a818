"""How the Milvus backend talks to the server: one ``MilvusClient``, bounded retries, and one
translation of "not now" failures into ``IndexUnavailableError``.

pymilvus retries a broken connection itself, within each call's ``timeout`` (it has no way to turn
that off while keeping a deadline); what still fails as unavailable is retried here, following the
product's policy (``facesearch_common.retry``, tenacity). Every request this backend sends is safe
to repeat: reads, upserts (a face id names its row), deletes (by id or by media id), and creating
the collection (a create whose first attempt went through is recognised and adopted by the caller).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import structlog
import tenacity
from pymilvus import MilvusClient, MilvusException

from facesearch_common.retry import backoff, until_up
from search_service.errors import IndexUnavailableError
from search_service.settings import MilvusSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")
ClientFactory = Callable[[MilvusSettings], MilvusClient]

# gRPC statuses that mean "not now": the server is down or restarting, overloaded, or too slow.
UNAVAILABLE_GRPC = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# Milvus status codes that mean the same: no connection (pymilvus), service unavailable (2), and
# rate limited (8). The server also marks its own transient errors `retriable`.
UNAVAILABLE_CODES = frozenset({2, 8})
# The collection is gone or not loaded: searches cannot be answered until open() runs again.
COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101


def is_unavailable(error: BaseException) -> bool:
    """Whether a pymilvus or gRPC error means "try later" rather than "wrong request"."""
    if isinstance(error, grpc.FutureTimeoutError):
        return True
    if isinstance(error, grpc.RpcError):
        code = getattr(error, "code", None)
        return callable(code) and code() in UNAVAILABLE_GRPC
    if isinstance(error, MilvusException):
        if isinstance(error.code, grpc.StatusCode):  # pymilvus gave up retrying a gRPC failure
            return error.code in UNAVAILABLE_GRPC
        return bool(error.retriable) or error.code in UNAVAILABLE_CODES
    return False


@contextmanager
def unavailable_on_transient(action: str) -> Iterator[None]:
    """Turn the errors that mean "try later" into IndexUnavailableError; let the rest through."""
    try:
        yield
    except (MilvusException, grpc.RpcError, grpc.FutureTimeoutError) as error:
        if is_unavailable(error):
            raise IndexUnavailableError(f"Milvus unavailable while {action}: {_reason(error)}") from error
        raise


def _reason(error: BaseException) -> str:
    if isinstance(error, MilvusException):
        return f"{error.code} {error.message}"
    return str(error) or type(error).__name__


def connect(settings: MilvusSettings) -> MilvusClient:
    """A client of its own (pymilvus shares connections between clients unless told not to)."""
    options: dict[str, Any] = {"dedicated": True}
    if settings.token is not None:
        options["token"] = settings.token.get_secret_value()
    if settings.db_name:
        options["db_name"] = settings.db_name
    return MilvusClient(uri=settings.uri, timeout=settings.timeout_s, **options)


class MilvusServer:
    """The client of one backend handle, connected on first use and kept for the handle's life."""

    def __init__(self, settings: MilvusSettings, client_factory: ClientFactory | None = None) -> None:
        """``client_factory`` replaces ``connect`` (tests wrap the client to inject failures)."""
        self._settings = settings
        self._factory = client_factory or connect
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def client(self) -> MilvusClient:
        """The connected client; connecting now if it is not yet (IndexUnavailableError if down)."""
        with self._lock:
            if self._client is None:
                with unavailable_on_transient("connecting"):
                    self._client = self._factory(self._settings)
            return self._client

    def once(self, action: str, send: Callable[[MilvusClient], T]) -> T:
        """One attempt; failures that mean "not now" raise IndexUnavailableError."""
        client = self.client()
        with unavailable_on_transient(action):
            return send(client)

    def request(self, action: str, send: Callable[[MilvusClient], T]) -> T:
        """Like ``once``, retried ``settings.retries`` times with backoff while Milvus is unavailable."""
        policy = backoff(
            f"{action} on Milvus",
            retries=self._settings.retries,
            backoff_s=self._settings.backoff_s,
            retry_on=IndexUnavailableError,
        )
        return tenacity.Retrying(**policy)(self.once, action, send)

    def call(self, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.method(*args, **kwargs)`` through ``request``."""
        return self.request(action, lambda client: getattr(client, method)(*args, **kwargs))

    def wait_until_up(self) -> None:
        """At start the server may still be booting (compose starts everything at once): poll it
        for up to ``connect_wait_s``, then give up with IndexUnavailableError."""
        policy = until_up(
            "connecting to Milvus",
            retry_on=IndexUnavailableError,
            wait_s=self._settings.connect_wait_s,
            backoff_s=self._settings.backoff_s,
        )
        timeout = self._settings.timeout_s
        version = tenacity.Retrying(**policy)(
            self.once, "connecting", lambda c: c.get_server_version(timeout=timeout)
        )
        log.info("milvus connected", server=version)
