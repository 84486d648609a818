"""A file answer whose Range refusals are JSON, like every other 4xx of the API."""

from __future__ import annotations

import json

from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

RANGE_REFUSALS = {400: "malformed Range header", 416: "no byte of the Range lies in the file"}


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
