"""A tiny HTTP/1.1 server on 127.0.0.1 for `httpRequest` tests: no traffic leaves the machine.

Written on asyncio streams so tests control every byte: slow heads, dripping bodies, huge bodies,
redirects, broken JSON. Each request it receives is recorded, so a test can show that a refused
request never arrived.
"""

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # `stop` ends slow handlers; finishing normally keeps asyncio from logging it
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        parts = urlsplit(target)
        seen = Seen(method, parts.path, parse_qs(parts.query), headers, body)
        self.seen.append(seen)
        await self._route(seen, writer)

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
        head.append(f"Content-Length: {len(body)}")
        head += [f"{name}: {value}" for name, value in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _route(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        query = {key: values[0] for key, values in seen.query.items()}
        if seen.path == "/echo":
            payload: dict[str, Any] = {
                "method": seen.method,
                "query": seen.query,
                "headers": seen.headers,
                "body": seen.body.decode(),
            }
            await self._send(writer, 200, json.dumps(payload).encode())
        elif seen.path == "/text":
            await self._send(writer, 200, b"hello there", "text/plain; charset=utf-8")
        elif seen.path.startswith("/status/"):
            status = int(seen.path.rsplit("/", 1)[1])
            await self._send(writer, status, json.dumps({"status": status}).encode())
        elif seen.path == "/badjson":
            await self._send(writer, 200, b"{not json")
        elif seen.path == "/slow":
            await asyncio.sleep(float(query.get("s", "5")))
            await self._send(writer, 200, b"{}")
        elif seen.path == "/drip":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
            )
            for _ in range(100):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        elif seen.path == "/huge":
            size = int(query.get("size", str(5 * 1024 * 1024)))
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await self._stream(writer, size)
        elif seen.path == "/huge-unsized":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            )
            await self._stream(writer, int(query.get("size", str(5 * 1024 * 1024))))
        elif seen.path == "/redirect":
            code = int(query.get("code", "302"))
            await self._send(writer, code, b"", extra={"Location": query["to"]})
        elif seen.path == "/loop":
            await self._send(writer, 302, b"", extra={"Location": "/loop"})
        else:
            await self._send(writer, 404, b'{"error": "not found"}')

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, size: int) -> None:
        chunk = b"y" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)


def tls_pair(tmp: Path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a server certificate for `names`: (server context, client context
    trusting only that CA)."""
    now = datetime.now(UTC)

    def build(
        subject: str,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("apiforge test CA", "apiforge test CA", ca_key, ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(names[0], "apiforge test CA", leaf_key, ca_key, False)
    cert_file, key_file = tmp / "server.pem", tmp / "server.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server, client
