"""Streaming a `multipart/form-data` upload straight into staged files on disk.

FastAPI's `UploadFile` would first spool the whole body into the system's temporary directory and
only then hand it over. Here each file part is written, as it arrives, to a staged file beside
its final place (`storage.py`), hashed (md5) and counted on the way, and a file past the size
limit stops the request at that byte: nothing more is read or written. Disk writes run in a
worker thread so a slow disk never stalls the event loop.

`receive_form` is a context manager: every staged file still in `.incoming/` when it exits —
the request failed, the client went away, or the caller did not place it — is deleted.
"""

import codecs
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from apiforge.core.errors import PayloadTooLargeError, ValidationError
from apiforge.files.naming import clean_content_type, clean_name
from apiforge.files.storage import FileStorage, StagedFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_TEXT_BYTES = 1024  # a text field (an md5) is short
MAX_HEADER_BYTES = 8 * 1024  # the headers of one part, together
FORM_OVERHEAD = 64 * 1024  # boundaries, part headers and text fields of an upload request


@dataclass(frozen=True, slots=True)
class FormSpec:
    """What one upload route accepts: file fields, text fields, and the limits."""

    file_fields: frozenset[str]
    text_fields: frozenset[str]
    max_file_bytes: int
    max_files: int


@dataclass(slots=True)
class ReceivedForm:
    files: list[StagedFile] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)


class InvalidFormError(ValidationError):
    reason = "invalid_multipart"
    message = "The body must be multipart/form-data"


def _field_error(name: str, message: str) -> ValidationError:
    return ValidationError(errors=[{"field": name, "message": message}])


class _Receiver:
    """The parser's callbacks: collect each part's headers, stage file parts, keep text parts.
    Bytes for files are only queued here; `receive_form` writes them off the event loop."""

    def __init__(self, storage: FileStorage, spec: FormSpec, form: ReceivedForm) -> None:
        self.storage = storage
        self.spec = spec
        self.form = form
        self.pending: list[tuple[StagedFile, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._field = ""
        self._file: StagedFile | None = None
        self._skip = False  # a file input left empty by a browser (no file name)
        self._received = 0
        self._text = bytearray()
        self.complete = False  # the closing boundary arrived

    def callbacks(self) -> "MultipartCallbacks":
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers, self._header_bytes = {}, 0
        self._file, self._skip, self._received = None, False, 0
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidFormError("Every part needs a Content-Disposition name")
        self._field = _decode(options[b"name"])
        is_file = b"filename" in options
        if self._field in self.spec.file_fields:
            if not is_file:
                raise _field_error(self._field, "must be a file")
            filename = _decode(options[b"filename"])
            if not filename:  # what a browser sends for a file input left empty
                self._skip = True
                return
            if len(self.form.files) >= self.spec.max_files:
                raise ValidationError(
                    f"At most {self.spec.max_files} files per request",
                    reason="too_many_files",
                    errors=[{"field": self._field, "message": "too many files"}],
                )
            self._file = self.storage.stage(
                field=self._field,
                name=clean_name(filename),
                content_type=clean_content_type(_decode(self._headers.get(b"content-type", b""))),
            )
            self.form.files.append(self._file)
        elif self._field in self.spec.text_fields:
            if is_file:
                raise _field_error(self._field, "must be a text field, not a file")
        else:
            raise _field_error(self._field, "unknown field")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._skip:
            return
        if self._file is None:
            if len(self._text) + end - start > MAX_TEXT_BYTES:
                raise _field_error(self._field, f"longer than {MAX_TEXT_BYTES} bytes")
            self._text += data[start:end]
            return
        self._received += end - start
        if self._received > self.spec.max_file_bytes:
            raise PayloadTooLargeError(
                f"A file is larger than the upload limit of {self.spec.max_file_bytes} bytes",
                details={"maxFileBytes": self.spec.max_file_bytes, "field": self._field},
            )
        self.pending.append((self._file, data[start:end]))

    def on_part_end(self) -> None:
        if self._file is None and not self._skip:
            text = _decode(bytes(self._text))
            self.form.texts.setdefault(self._field, []).append(text)

    def on_end(self) -> None:
        self.complete = True

    def _count_header(self, length: int) -> None:
        self._header_bytes += length
        if self._header_bytes > MAX_HEADER_BYTES:
            raise InvalidFormError("A part's headers are too long")


def _decode(raw: bytes) -> str:
    """Header and field values as browsers send them: UTF-8, else Latin-1 (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _write(pending: list[tuple[StagedFile, bytes]]) -> None:
    for staged, data in pending:
        staged.write(data)


def _boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidFormError()
    charset = params.get(b"charset")
    if charset is not None:  # checked only so a bogus one is refused like any malformed body
        try:
            codecs.lookup(charset.decode("latin-1"))
        except LookupError as exc:
            raise InvalidFormError("Unknown charset") from exc
    return params[b"boundary"]


@asynccontextmanager
async def receive_form(
    content_type: str, stream: AsyncIterator[bytes], storage: FileStorage, spec: FormSpec
) -> AsyncIterator[ReceivedForm]:
    """Read the whole form from `stream`, staging its files; yields it once complete. Raises 400
    (`invalid_multipart`, `invalid_input` naming the field, `too_many_files`) or 413 as soon as
    the stream shows the problem. Staged files not placed by the caller are deleted on exit."""
    form = ReceivedForm()
    receiver = _Receiver(storage, spec, form)
    try:
        try:
            parser = MultipartParser(_boundary(content_type), receiver.callbacks())
            async for chunk in stream:
                parser.write(chunk)
                pending, receiver.pending = receiver.pending, []
                if pending:
                    await anyio.to_thread.run_sync(_write, pending)
        except FormParserError as exc:
            raise InvalidFormError("Malformed multipart body") from exc
        if not receiver.complete:  # the body ended before the closing boundary: truncated
            raise InvalidFormError("The multipart body ends before its closing boundary")
        for staged in form.files:
            staged.close()
        yield form
    finally:
        for staged in form.files:
            staged.discard()
