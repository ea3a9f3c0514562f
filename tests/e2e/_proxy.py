"""A TCP proxy of the test's own between the app and a shared server (PostgreSQL, Redis): the
test stalls or cuts only its own app's connections, never the other users' of that server."""

import asyncio
import contextlib


class TcpProxy:
    """Forwards TCP from a free port of 127.0.0.1 to `host:port`. `stall()` stops forwarding
    (connections stay open, nothing comes back: a server that accepts and then answers
    nothing), `resume()` forwards again; `upstream_addresses()` are the proxy's own sockets to
    the server, as the server sees its clients (Redis `CLIENT LIST` `addr`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.upstreams: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def upstream_addresses(self) -> list[str]:
        found = (w.get_extra_info("sockname") for w in self.upstreams)
        return [f"{host}:{port}" for host, port in found]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.upstreams.add(up_writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self.tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.upstreams.discard(up_writer)
            for task in pipes:
                task.cancel()
                self.tasks.discard(task)
            for end in (writer, up_writer):
                end.close()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                await self.flowing.wait()  # stalled: held here, neither passed on nor refused
                sink.write(data)
                await sink.drain()
