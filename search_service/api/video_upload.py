"""Receive a multipart upload with one large file part straight into a staging file.

FastAPI's ``UploadFile`` has the whole body spooled to a temporary file elsewhere before the route
runs; a video can be gigabytes, so here the body is parsed as it streams in: the file part goes to a
staging file in the blob store (hashed on the way, its size checked at every chunk, before writing),
text fields stay in memory. Any failure removes the staging file, so a refused upload leaves nothing;
a disk that fills up meanwhile is a 507 (InsufficientStorageError).
A body that is not well-formed multipart (no boundary, bytes the parser cannot read, a part without
a field name, an end before the closing boundary) is a 400, as FastAPI answers for ``/images``; a
well-formed form whose fields are missing or invalid is a 422.
The file may be allowed under one of several field names, each with its own size limit
(``POST /search``: a photo as ``image`` or a clip as ``video``); exactly one file is accepted.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

from search_service.api.errors import invalid_parameter
from search_service.domain import StagedFile
from search_service.errors import UploadTooLargeError, refused_when_full

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

Form = TypeVar("Form", bound=BaseModel)

# Text fields (collection, external_id) are short; anything longer is a mistake or an attack.
MAX_FIELD_BYTES = 4096
_GENERIC_TYPES = frozenset({"", "application/octet-stream"})


def malformed(reason: str) -> HTTPException:
    """A 400 for a body that cannot be read as multipart/form-data at all."""
    return HTTPException(400, detail=f"malformed multipart/form-data body: {reason}")


class _Parts:
    """Collects the parser's callbacks: file bytes to write, text fields, and the first error."""

    def __init__(self, file_fields: Mapping[str, int]) -> None:
        self.file_fields = file_fields
        self.file_field: str | None = None  # the file part received, one of file_fields
        self.filename: str | None = None
        self.declared_type = ""
        self.file_parts = 0
        self.pending: list[bytes] = []  # file bytes parsed but not yet written
        self.fields: dict[str, bytearray] = {}
        self.error: Exception | None = None
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._target: bytearray | None = None  # the text field being read; None for the file part

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or not options.get(b"name"):
            self._fail(malformed('a part has no Content-Disposition "form-data" header with a field name'))
            self._target = bytearray()  # its bytes go nowhere: the request fails after this chunk
            return
        name = options[b"name"].decode("utf-8", "replace")
        if name in self.file_fields:
            self.file_parts += 1
            if self.file_parts > 1:
                repeated = name == self.file_field
                message = "send one file per request" if repeated else _one_of(self.file_fields)
                self._fail(invalid_parameter(("body", name), message, None))
            self.file_field = name
            filename = options.get(b"filename")
            self.filename = None if filename is None else Path(filename.decode("utf-8", "replace")).name
            self.declared_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()
            self._target = None
        else:
            self._target = self.fields[name] = bytearray()  # a repeated field: the last one counts

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target is None:
            self.pending.append(data[start:end])
            return
        self._target += data[start:end]
        if len(self._target) > MAX_FIELD_BYTES:
            self._fail(invalid_parameter(("body",), f"a form field is over {MAX_FIELD_BYTES} bytes", None))

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def content_type(self) -> str:
        if self.declared_type.lower() not in _GENERIC_TYPES:
            return self.declared_type
        guessed = mimetypes.guess_type(self.filename or "")[0]
        return guessed or "application/octet-stream"


def _one_of(fields: Mapping[str, int]) -> str:
    names = [f"`{name}`" for name in fields]
    return f"send either {', '.join(names[:-1])} or {names[-1]}, not both"


def missing_file(fields: Mapping[str, int]) -> RequestValidationError:
    """The 422 for a body that carries none of the file ``fields``."""
    if len(fields) == 1:
        [field] = fields
        return RequestValidationError(
            [{"type": "missing", "loc": ("body", field), "msg": "Field required", "input": None}]
        )
    names = [f"`{name}`" for name in fields]
    message = f"no file: send one as {', '.join(names[:-1])} or {names[-1]}"
    return RequestValidationError([{"type": "missing", "loc": ("body",), "msg": message, "input": None}])


def _parse(parser: MultipartParser, chunk: bytes | None) -> None:
    """Feed the parser a chunk (None: the end of the body); what it cannot parse is a 400."""
    try:
        if chunk is None:
            parser.finalize()
        else:
            parser.write(chunk)
    except FormParserError as error:
        raise malformed(str(error) or type(error).__name__) from error


def _write(file: IO[bytes], digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        file.write(chunk)


async def receive_upload(
    request: Request,
    *,
    file_field: str,
    form_model: type[Form],
    staging: Callable[[], IO[bytes]],
    max_bytes: int,
) -> tuple[StagedFile, Form]:
    """Stream a multipart body that carries exactly one file, as ``file_field``: the file into a new
    ``staging()`` file (at most ``max_bytes``, else 413), the other fields into ``form_model``
    (invalid: 422). No file or more than one is a 422. The caller owns the staging file afterwards:
    on any failure here it is already removed."""
    _, staged, form = await _receive(request, {file_field: max_bytes}, form_model, staging, required=True)
    assert staged is not None  # required: a body without one was refused
    return staged, form


async def receive_at_most_one(
    request: Request,
    *,
    file_fields: Mapping[str, int],
    form_model: type[Form],
    staging: Callable[[], IO[bytes]],
) -> tuple[str | None, StagedFile | None, Form]:
    """Stream a multipart body that carries at most one file, as one of ``file_fields`` (name: its
    limit in bytes, over which 413): the file into a new ``staging()`` file, the other fields into
    ``form_model`` (invalid: 422); more than one file is a 422. Returns the file's field name. A body
    of form fields only is no error: then no file comes back, and no staging file is left
    (``POST /search`` with a stored face's ``face_id``). The caller owns the staging file afterwards:
    on any failure here it is already removed."""
    return await _receive(request, file_fields, form_model, staging, required=False)


async def _receive(
    request: Request,
    file_fields: Mapping[str, int],
    form_model: type[Form],
    staging: Callable[[], IO[bytes]],
    *,
    required: bool,
) -> tuple[str | None, StagedFile | None, Form]:
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        names = " or ".join(f"`{name}`" for name in file_fields)
        raise invalid_parameter(("body",), f"send multipart/form-data with a {names} file", None)
    if not options.get(b"boundary"):
        raise malformed("no boundary in the Content-Type header")
    parts = _Parts(file_fields)
    parser = MultipartParser(options[b"boundary"], parts.callbacks())
    file = staging()
    path = Path(file.name)
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.stream():
            _parse(parser, chunk)
            if parts.error is not None:
                raise parts.error
            if parts.pending:
                assert parts.file_field is not None  # file bytes come only from a file part
                chunks, parts.pending = parts.pending, []
                size += sum(len(piece) for piece in chunks)
                max_bytes = file_fields[parts.file_field]
                if size > max_bytes:
                    raise UploadTooLargeError(
                        f"{parts.filename or parts.file_field}: over the limit of {max_bytes} bytes"
                    )
                await run_in_threadpool(_write, file, digest, chunks)
        _parse(parser, None)
        file.close()
        if parts.error is not None:
            raise parts.error
        if parser.state not in (MultipartState.END, MultipartState.BOUNDARY_PADDING):
            raise malformed("the body ends before its closing boundary")
        if parts.file_field is None and required:
            raise missing_file(file_fields)
        try:
            # An empty field means "not given", as FastAPI's Form() reads it (HTML forms send blanks).
            values = {name: value.decode() for name, value in parts.fields.items() if value}
            form = form_model.model_validate(values)
        except (ValidationError, UnicodeDecodeError) as error:
            errors = error.errors() if isinstance(error, ValidationError) else []
            raise RequestValidationError(
                [{**entry, "loc": ("body", *entry["loc"])} for entry in errors]
                or [
                    {
                        "type": "value_error",
                        "loc": ("body",),
                        "msg": "form fields must be UTF-8",
                        "input": None,
                    }
                ]
            ) from error
    except BaseException:
        with suppress(OSError):  # closing flushes the buffer, which fails again on a full disk
            file.close()
        path.unlink(missing_ok=True)
        with refused_when_full("the upload"):  # re-raised through it: a full disk becomes a 507
            raise
    field = parts.file_field
    if field is None:
        path.unlink(missing_ok=True)
        return None, None, form
    staged = StagedFile(path, parts.filename or field, parts.content_type(), size, digest.hexdigest())
    return field, staged, form
