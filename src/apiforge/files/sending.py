"""Sending a file's bytes from the handle the service opened: whole, as the byte ranges asked
for (RFC 9110 §14), or not at all when the client already has them (304, §13).

Our own response, not Starlette's `FileResponse`: that one reads from its path, which a
deletion committing meanwhile unlinks (the reason `Download` is opened by the service), and only
overriding a private method made it read from a handle; it also answered a malformed `Range`
with a plain-text 400 and knew no `If-None-Match`.
"""

import re
import secrets
from collections.abc import AsyncIterator, Mapping
from email.utils import formatdate, parsedate_to_datetime
from typing import BinaryIO

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from apiforge.core.errors import ApiforgeError

CHUNK = 64 * 1024
# More members than this and the `Range` is ignored (§14.2 allows it: many small ranges are a
# denial-of-service pattern, §17.15).
MAX_RANGES = 100
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")
_BEYOND = 10**18  # any position written with more digits: past the end of every file

ByteRange = tuple[int, int]  # start, end (exclusive)


class RangeNotSatisfiableError(ApiforgeError):
    """416: a valid `Range` none of whose ranges lies within the file (`data.size`)."""

    status = 416
    reason = "range_not_satisfiable"
    message = "No range asked for lies within the file"

    def __init__(self, size: int) -> None:
        super().__init__(details={"size": size}, headers={"Content-Range": f"bytes */{size}"})


def _position(digits: str) -> int:
    # Huge numerals are valid (§14.1.1: expect them); int() refuses very long ones.
    return int(digits) if len(digits) < 18 else _BEYOND


def byte_ranges(value: str, size: int) -> list[ByteRange] | None:
    """The ranges a `Range` header asks of `size` bytes; None to send the whole file instead.

    Ignored (None): a unit other than `bytes` (§14.2: MUST), a value that is not a valid range
    set (§14.2: MAY; a broken client gets the file rather than an error), more than
    `MAX_RANGES` members, and an empty file's suffix range (no 206 can describe it). 416 when
    valid but no range lies within the file. Overlapping or adjacent ranges are merged (§14.2
    allows it, and it bounds the answer to the file's size); otherwise the order asked is kept."""
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    members = [member.strip() for member in spec.split(",")]
    members = [member for member in members if member]  # empty list members are allowed
    if not members or len(members) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for member in members:
        if found := _INT_RANGE.fullmatch(member):
            first = _position(found[1])
            last = _position(found[2]) if found[2] else None
            if last is not None and last < first:
                return None
            if first < size:
                ranges.append((first, size if last is None else min(last + 1, size)))
        elif found := _SUFFIX_RANGE.fullmatch(member):
            length = _position(found[1])
            if length and not size:
                return None
            if length:
                ranges.append((max(size - length, 0), size))
        else:
            return None
    if not ranges:
        raise RangeNotSatisfiableError(size)
    merged: list[ByteRange] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return ranges if len(merged) == len(ranges) else merged


def _not_modified(request: Headers, etag: str, mtime: float) -> bool:
    """Whether the client has the bytes already: `If-None-Match` is `*` or names the tag (weak
    comparison, §13.1.2); only without it, `If-Modified-Since` is a valid date not before the
    bytes' (§13.1.3)."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return if_none_match.strip() == "*" or etag in tags
    if_modified_since = request.get("if-modified-since")
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    return since.tzinfo is not None and int(mtime) <= since.timestamp()


class _HandleResponse(StreamingResponse):
    """A streamed answer that closes the file's handle however it ends."""

    def __init__(
        self, handle: BinaryIO, chunks: AsyncIterator[bytes], status: int, headers: dict[str, str]
    ) -> None:
        self.handle = handle
        super().__init__(chunks, status_code=status, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.close()


def _read(handle: BinaryIO, start: int, size: int) -> bytes:
    handle.seek(start)
    return handle.read(size)


async def _bytes(handle: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    while start < end:
        chunk = await anyio.to_thread.run_sync(_read, handle, start, min(CHUNK, end - start))
        if not chunk:
            raise RuntimeError("the file is shorter than its size")
        start += len(chunk)
        yield chunk


async def _parts(
    handle: BinaryIO, ranges: list[ByteRange], heads: list[bytes], tail: bytes
) -> AsyncIterator[bytes]:
    for (start, end), head in zip(ranges, heads, strict=True):
        yield head
        async for chunk in _bytes(handle, start, end):
            yield chunk
        yield b"\r\n"
    yield tail


def send_file(
    handle: BinaryIO,
    *,
    size: int,
    mtime: float,
    etag: str,
    media_type: str,
    request: Headers,
    headers: Mapping[str, str],
    whole_only: Mapping[str, str],
) -> Response:
    """The answer to a GET of an open file of `size` bytes: 304 when `If-None-Match` names
    `etag` (or, without it, `If-Modified-Since` is not before `mtime`); 206 with the ranges of
    a valid `Range` (only while `If-Range` names `etag` or the `Last-Modified` date exactly);
    416 (raised, in the envelope) when none lies within the file; else 200 with the whole file.
    `headers` go with every answer but the 304, `whole_only` only with the whole file (digests
    of the whole file would be wrong for a part). Takes over `handle`: the answer closes it."""
    try:
        if _not_modified(request, etag, mtime):
            handle.close()
            kept = {k: v for k, v in headers.items() if k.lower() == "cache-control"}
            return Response(status_code=304, headers={**kept, "ETag": etag})
        modified = formatdate(mtime, usegmt=True)
        common = {**headers, "ETag": etag, "Last-Modified": modified, "Accept-Ranges": "bytes"}
        asked, if_range = request.get("range"), request.get("if-range")
        ranges = None
        if asked is not None and if_range in (None, etag, modified):
            ranges = byte_ranges(asked, size)
        if ranges is None:
            whole = {**common, **whole_only, "Content-Type": media_type}
            whole["Content-Length"] = str(size)
            return _HandleResponse(handle, _bytes(handle, 0, size), 200, whole)
        if len(ranges) == 1:
            [(start, end)] = ranges
            part = {**common, "Content-Type": media_type}
            part["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            part["Content-Length"] = str(end - start)
            return _HandleResponse(handle, _bytes(handle, start, end), 206, part)
        boundary = secrets.token_hex(13)
        heads = [
            f"--{boundary}\r\nContent-Type: {media_type}\r\n"
            f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n".encode("latin-1")
            for start, end in ranges
        ]
        tail = f"--{boundary}--".encode("latin-1")
        length = sum(
            len(h) + end - start + 2 for h, (start, end) in zip(heads, ranges, strict=True)
        )
        several = {**common, "Content-Type": f"multipart/byteranges; boundary={boundary}"}
        several["Content-Length"] = str(length + len(tail))
        chunks = _parts(handle, ranges, heads, tail)
        return _HandleResponse(handle, chunks, 206, several)
    except BaseException:
        handle.close()
        raise
