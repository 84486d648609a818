"""What can go wrong, in the service's own terms: no HTTP here.

Services, storage, the index and the embedder client raise these; the API maps each to an HTTP
status in one place (``search_service.api.errors``), and clients get ``{"detail": message}``.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal


class ServiceError(Exception):
    """Base of every expected failure; ``detail`` is shown to the client as is."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(ServiceError):
    """No such image, video, track or job."""


class ConflictError(ServiceError):
    """The request contradicts the current state (say, cancelling a job that has ended)."""


class NoFaceError(ServiceError):
    """A query photo or clip in which no face was found."""


class UploadTooLargeError(ServiceError):
    """An upload over a configured size limit."""


class ClipTooLongError(UploadTooLargeError):
    """A query clip longer than the configured limit (in seconds)."""


class NotAVideoError(ServiceError):
    """A query clip that is no decodable video (corrupt, empty, audio only, a still image)."""


class UndecodableImageError(ServiceError):
    """A stored photo that no longer decodes here (a thumbnail of it was asked for)."""


class ModelMismatchError(ServiceError):
    """Vectors of one embedding model offered to a store that holds another model's."""


# Why the embedder refused an upload: the relayed verdict on the upload itself.
RejectionReason = Literal["unreadable", "too_large", "unsupported", "invalid"]


class EmbedderRejectedError(ServiceError):
    """The embedder refused an upload (not an image, truncated, too large...): the client's fault."""

    def __init__(self, detail: str, reason: RejectionReason) -> None:
        super().__init__(detail)
        self.reason: RejectionReason = reason


class EmbedderUnavailableError(ServiceError):
    """The embedder cannot be reached or keeps failing: worth retrying later."""


class EmbedderProtocolError(ServiceError):
    """The embedder answered something this service does not understand."""


class IndexUnavailableError(ServiceError):
    """The vector index backend cannot be reached or refused the request."""


class ShuttingDownError(ServiceError):
    """The service is stopping and gave up a request in progress: worth sending again."""


class InsufficientStorageError(ServiceError):
    """The data directory's disk is full, or below the free-space floor: nothing was stored."""


# What an OSError's errno says when the disk, or this user's quota on it, is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite's words for it: no room to append (FULL), or none to size the shared-memory file a WAL
# database needs when it is opened (IOERR_SHMSIZE).
_DISK_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE})


def says_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (an OSError, or the store's SQLite) tells that the disk (or this user's
    quota) is full."""
    if isinstance(error, sqlite3.Error):
        # Errors raised by the sqlite3 module itself (a closed connection) carry no code.
        return getattr(error, "sqlite_errorcode", None) in _DISK_FULL_CODES
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


@contextmanager
def refused_when_full(what: str) -> Iterator[None]:
    """A full disk met in the block (``says_disk_full``) becomes InsufficientStorageError; other
    errors pass unchanged."""
    try:
        yield
    except Exception as error:
        if not says_disk_full(error):
            raise
        raise InsufficientStorageError(
            f"the disk is full: {what} was not stored; free space or delete stored media, then retry"
        ) from error
