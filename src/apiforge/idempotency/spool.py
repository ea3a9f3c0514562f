"""A management request's body, read whole before its route runs (its fingerprint decides between
a claim, a replay and a 422) without holding it in memory: kept in memory up to 1 MiB, then in a
temporary file — a keyed upload of 10 files of 50 MB must not cost 500 MB of the process's
memory. The fingerprint is hashed as the body arrives. A client that leaves before its body is
whole raises `ClientDisconnect`, as Starlette's own reading does: a cut body must never reach
the route as if it were the request (a cut YAML import still parses) nor be claimed under the
key the client will retry with."""

import tempfile
from collections.abc import Iterator
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from apiforge.idempotency.keys import fingerprint_hash, legacy_fingerprint
from apiforge.tools.hashing import KeyedSha256

IN_MEMORY_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024


class SpooledBody:
    def __init__(self, key: KeyedSha256, method: str, path: str, query: str) -> None:
        self._key = key
        self._head = (method, path, query)
        self._hash = fingerprint_hash(key, *self._head)
        self._file: Any = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115
        self.size = 0

    @property
    def on_disk(self) -> bool:
        return self.size > IN_MEMORY_BYTES  # where SpooledTemporaryFile rolls over to a file

    async def read_from(self, receive: Receive) -> None:
        """The client's whole body; `ClientDisconnect` when it leaves before the end."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            self._hash.update(chunk)
            self._file.write(chunk)
            self.size += len(chunk)
            if not message.get("more_body", False):
                break
        self._file.seek(0)

    def fingerprint(self) -> str:
        return self._key.end(self._hash)

    def legacy_fingerprint(self) -> str:
        """The body's fingerprint in its earlier, unkeyed form (`keys.legacy_fingerprint`),
        read again from the spool: asked only when a stored fingerprint differs, never hashed
        twice as the body arrives. Leaves the spool at its start for the route."""
        self._file.seek(0)
        try:
            return legacy_fingerprint(*self._head, self._chunks())
        finally:
            self._file.seek(0)

    def _chunks(self) -> Iterator[bytes]:
        while chunk := self._file.read(CHUNK_BYTES):
            yield chunk

    def replaying(self, receive: Receive) -> Receive:
        """A `receive` that hands the route the body read, in chunks, then defers to the
        client's (for its disconnect)."""
        done = False

        async def replay() -> Message:
            nonlocal done
            if done:
                return await receive()
            chunk = self._file.read(CHUNK_BYTES)
            done = self._file.tell() >= self.size
            return {"type": "http.request", "body": chunk, "more_body": not done}

        return replay

    def __enter__(self) -> "SpooledBody":
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()
