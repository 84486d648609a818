"""Errors the services raise, each carrying the HTTP status and message the client gets.

One exception handler (in ``main``) turns them into FastAPI's error shape, ``{"detail": ...}``.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(ServiceError):
    status_code = 404


class NoFaceError(ServiceError):
    status_code = 422


class UploadTooLargeError(ServiceError):
    status_code = 413


class ModelMismatchError(ServiceError):
    status_code = 409


class EmbedderRejectedError(ServiceError):
    """The embedder refused an upload (not an image, truncated, too large...): the client's fault."""


class EmbedderUnavailableError(ServiceError):
    status_code = 503


class EmbedderProtocolError(ServiceError):
    status_code = 502
