"""A slow network path on loopback: a TCP proxy whose server-to-client direction carries at most
``down_bytes_s`` bytes a second. The server's writes back up into its
own socket buffers as they would behind a weak Wi-Fi link or a congested uplink."""

from __future__ import annotations

import asyncio
import contextlib


class ThrottledLink:
    def __init__(self, target_port: int, down_bytes_s: int) -> None:
        self.target_port = target_port
        self.down_bytes_s = down_bytes_s
        self.port = 0
        self.delivered = 0  # bytes that reached a client
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()

    async def start(self) -> ThrottledLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        pipes = [
            asyncio.ensure_future(self._pipe(client_in, server_out, throttled=False)),
            asyncio.ensure_future(self._pipe(server_in, client_out, throttled=True)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttled: bool
    ) -> None:
        # Small reads when throttled, so that the pace is even (a 4 kB piece is 1/16 s at 64 kB/s).
        size = 4096 if throttled else 65536
        try:
            while data := await reader.read(size):
                if throttled:
                    await asyncio.sleep(len(data) / self.down_bytes_s)
                    self.delivered += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
