"""The one map from the service's errors to HTTP statuses.

Each error is also reached end to end through HTTP elsewhere (404: test_bad_input, 409:
test_embedder and test_videos, 413 and 415: test_bad_input and test_clip_search, 422:
test_bad_input, 502 and 503: test_embedder); this checks that no error class is left without its
status.
"""

from __future__ import annotations

from typing import get_args

import pytest

from search_service import errors
from search_service.api.errors import status_of
from search_service.errors import EmbedderRejectedError, RejectionReason, ServiceError

EXPECTED = {
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.ModelMismatchError: 409,
    errors.UploadTooLargeError: 413,
    errors.ClipTooLongError: 413,
    errors.NotAVideoError: 415,
    errors.UndecodableImageError: 415,
    errors.NoFaceError: 422,
    errors.EmbedderProtocolError: 502,
    errors.EmbedderUnavailableError: 503,
    errors.IndexUnavailableError: 503,
    errors.ShuttingDownError: 503,
    errors.InsufficientStorageError: 507,
}
REJECTIONS: dict[RejectionReason, int] = {
    "unreadable": 400,
    "too_large": 413,
    "unsupported": 415,
    "invalid": 422,
}


def every_subclass(kind: type[ServiceError]) -> set[type[ServiceError]]:
    direct = set(kind.__subclasses__())
    return direct.union(*(every_subclass(sub) for sub in direct))


def test_every_service_error_has_its_status() -> None:
    assert every_subclass(ServiceError) == {*EXPECTED, EmbedderRejectedError}  # none forgotten here
    for kind, status in EXPECTED.items():
        assert status_of(kind("x")) == status, kind.__name__


@pytest.mark.parametrize("reason", get_args(RejectionReason))
def test_an_embedder_rejection_keeps_the_embedders_status(reason: RejectionReason) -> None:
    assert status_of(EmbedderRejectedError("photo.png: no", reason)) == REJECTIONS[reason]


def test_an_unmapped_error_is_a_500() -> None:
    assert status_of(ServiceError("unexpected")) == 500
