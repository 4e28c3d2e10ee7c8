"""A client of the WebSocket session protocol (``protocol``, docs/protocol.md): streams
microphone-like audio in real time and records every event and reply frame with its arrival time. Used by `appliance chat`, the
conversation benchmark and the tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from appliance.transport.protocol import Bye, Hello


@dataclass
class Received:
    events: list[tuple[float, dict]] = field(default_factory=list)
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    closed: tuple[int | None, str] | None = None

    def of_type(self, kind: str) -> list[dict]:
        return [e for _, e in self.events if e.get("type") == kind]

    def audio(self, since: float = 0.0) -> bytes:
        return b"".join(f for t, f in self.frames if t >= since)


class WsClient:
    def __init__(self, url: str, ssl=None) -> None:
        self.url = url
        self._ssl = ssl
        self.rx = Received()
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self.ready: dict | None = None

    async def connect(
        self, sample_rate: int = 16000, token: str | None = None, voice: str | None = None
    ) -> dict:
        self._session = aiohttp.ClientSession()
        kwargs = {} if self._ssl is None else {"ssl": self._ssl}
        self.ws = await self._session.ws_connect(self.url, max_msg_size=4 << 20, **kwargs)
        self._reader = asyncio.create_task(self._read())
        await self.send_json(Hello(sample_rate, token, voice).to_dict())
        self.ready = await self.wait_for(lambda: next(iter(self.rx.of_type("ready")), None), 30)
        return self.ready

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            now = loop.time()
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.rx.frames.append((now, msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.rx.events.append((now, json.loads(msg.data)))
            self._changed.set()
        self.rx.closed = (self.ws.close_code, "")
        self._changed.set()

    async def wait_for(self, predicate, timeout: float):
        """Wait until ``predicate()`` returns something truthy (re-checked on every message)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self.rx.closed and not result:
                raise ConnectionError(f"connection closed (code {self.rx.closed[0]}) while waiting")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("timed out waiting for the server")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def send_json(self, obj: dict) -> None:
        await self.ws.send_str(json.dumps(obj))

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def stream(self, samples: np.ndarray, rate: int, chunk_ms: int = 20) -> float:
        """Send int16 ``samples`` in real time, like a microphone; returns the loop time the
        first chunk was sent (stream position 0)."""
        loop = asyncio.get_running_loop()
        step = rate * chunk_ms // 1000
        data = np.asarray(samples, dtype="<i2")
        start = loop.time()
        for i, offset in enumerate(range(0, len(data), step)):
            due = start + i * chunk_ms / 1000
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.ws.send_bytes(data[offset : offset + step].tobytes())
        return start

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await self.send_json(Bye().to_dict())
            except ConnectionError:
                pass
            await self.ws.close()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session:
            await self._session.close()
