"""A file answer whose Range refusals are JSON, like every other 4xx of the API; every route that
answers with a stored file uses it, and documents its answers with :func:`ranged_file_responses`."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from search_service.api.schemas import ErrorResponse

RANGE_REFUSALS = {400: "malformed Range header", 416: "no byte of the Range lies in the file"}

# For a route's docstring: what RangedFileResponse honours.
RANGE_SUPPORT = (
    "`Accept-Ranges: bytes`; a `Range` header (one range, a suffix such as `bytes=-1000`, or several) "
    "is answered with a 206, and `If-Range` with the `ETag` or `Last-Modified` is honoured "
    "(Starlette's FileResponse implements all of it; its refusals come back as JSON)."
)


def ranged_file_responses(media_type: str, whole: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of a RangedFileResponse's answers: ``whole`` describes the 200."""
    return {
        200: {"content": {media_type: {}}, "description": whole},
        206: {
            "content": {media_type: {}, "multipart/byteranges": {}},
            "description": "The bytes of the `Range` asked for, with `Content-Range` (several ranges: "
            "multipart/byteranges).",
        },
        400: {
            "model": ErrorResponse,
            "description": "A `Range` header that is not `bytes=...`, or whose start lies past its end; "
            "or the request's Host is not in the service's allow-list.",
        },
        416: {
            "model": ErrorResponse,
            "description": "No byte of the `Range` lies in the file: `Content-Range: bytes */<size>` says "
            "its size.",
        },
    }


class RangedFileResponse(FileResponse):
    """Starlette's FileResponse (Range, If-Range, multipart byte ranges), except that a malformed
    or unsatisfiable ``Range`` gets ``{"detail": ...}`` instead of Starlette's plain text.

    Starlette answers those two cases from inside ``FileResponse.__call__`` with a
    ``PlainTextResponse`` and offers no hook; parsing the header again here would copy its range
    grammar, so the answer it sends is rewritten on the way out instead.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused: Message | None = None

        async def as_json(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] in RANGE_REFUSALS:
                refused = message  # sent with the body, whose length changes
                return
            if refused is not None and message["type"] == "http.response.body":
                text = bytes(message.get("body", b"")).decode("utf-8", "replace").strip()
                body = json.dumps({"detail": text or RANGE_REFUSALS[refused["status"]]}).encode()
                kept = [
                    (name, value)
                    for name, value in refused["headers"]
                    if name.lower() not in (b"content-length", b"content-type")
                ]
                headers = [
                    *kept,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({**refused, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await super().__call__(scope, receive, as_json)
