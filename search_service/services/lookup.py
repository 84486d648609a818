"""Looking a record up by id, for use cases where its absence is the client's error."""

from __future__ import annotations

from typing import TypeVar

from search_service.errors import NotFoundError

Record = TypeVar("Record")


def found(record: Record | None, missing: str) -> Record:
    """``record``, or NotFoundError(``missing``) when there is none."""
    if record is None:
        raise NotFoundError(missing)
    return record
