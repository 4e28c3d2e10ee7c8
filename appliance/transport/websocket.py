"""The WebSocket transport (path /ws) on aiohttp: the session protocol of ``protocol`` over one socket."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import WSMsgType, web

from appliance.transport.base import Channel
from appliance.transport.protocol import (
    MAX_MESSAGE_BYTES,
    AudioIn,
    CloseCode,
    Hello,
    Inbound,
    ProtocolError,
    check_audio,
    encode,
    parse_event,
    parse_hello,
    parse_text_message,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 2.0
SEND_BUFFER_BYTES = 64 * 1024  # a client that cannot take one message in this long is not reading
# A slow consumer's close frame waits behind the data it does not read: it gets this long to read
# it, then the connection is dropped, so that a client that never reads holds no socket.
SLOW_CLOSE_GRACE_S = 30.0


class WebSocketChannel(Channel):
    def __init__(self, ws: web.WebSocketResponse, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self._send_lock = asyncio.Lock()
        self._given_up = asyncio.get_running_loop().create_future()  # done: a slow consumer was cut off
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def accept(cls, request: web.Request) -> WebSocketChannel:
        """Upgrade and wait for hello. If it never comes right the connection is closed with a
        reason and ``hello`` is None."""
        ws = web.WebSocketResponse(max_msg_size=2 * MAX_MESSAGE_BYTES, heartbeat=20)
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            # Realtime audio never needs seconds of it queued in the kernel: a small send buffer
            # makes a client that stops reading show up as a stalled send within seconds.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        channel = cls(ws, request.remote or "?")
        channel._transport = request.transport
        channel.hello = None
        try:
            channel.hello = await asyncio.wait_for(channel._read_hello(), HELLO_TIMEOUT_S)
        except TimeoutError:
            await channel._fail(
                ProtocolError("no_hello", f"no hello within {HELLO_TIMEOUT_S:.0f} s", CloseCode.PROTOCOL)
            )
        except ProtocolError as exc:
            await channel._fail(exc)
        except ConnectionError:
            pass
        return channel

    @classmethod
    async def refuse(
        cls, request: web.Request, close_code: int, code: str, message: str
    ) -> web.WebSocketResponse:
        """Upgrade only to say no: an error event, then the close code (a browser sees no HTTP status)."""
        channel = cls(web.WebSocketResponse(), request.remote or "?")
        await channel.ws.prepare(request)
        try:
            await channel.send_error(code, message)
        except ConnectionError:
            pass
        await channel.close(close_code, message)
        return channel.ws

    async def _read_hello(self) -> Hello | None:
        msg = await self.ws.receive()
        if msg.type == WSMsgType.BINARY:
            raise ProtocolError(
                "hello_required", 'send {"type":"hello","sample_rate":N} before any audio', CloseCode.PROTOCOL
            )
        if msg.type != WSMsgType.TEXT:
            return None
        obj = parse_text_message(msg.data)
        if obj["type"] != "hello":
            raise ProtocolError(
                "hello_required", f"the first message must be hello (got {obj['type']!r})", CloseCode.PROTOCOL
            )
        return parse_hello(obj)

    async def _fail(self, exc: ProtocolError) -> None:
        log.warning("protocol error peer=%s code=%s %s", self.peer, exc.code, exc)
        try:
            await self.send_error(exc.code, str(exc))
        except Exception:  # noqa: BLE001, S110 — however the client went, the close below still runs
            pass
        await self.close(exc.close_code or CloseCode.PROTOCOL, str(exc))

    async def _next_frame(self):
        """``ws.receive()``, or None once a slow consumer was cut off: our close frame then waits
        behind data the client does not read, and aiohttp's receive would not return until it does."""
        receiving = asyncio.ensure_future(self.ws.receive())
        try:
            await asyncio.wait({receiving, self._given_up}, return_when=asyncio.FIRST_COMPLETED)
            return receiving.result() if receiving.done() else None
        finally:
            receiving.cancel()

    async def receive(self) -> Inbound | None:
        while not self.ws.closed:
            msg = await self._next_frame()
            if msg is None:
                return None
            try:
                if msg.type == WSMsgType.BINARY:
                    if len(msg.data) > MAX_MESSAGE_BYTES:
                        raise ProtocolError(
                            "too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG
                        )
                    check_audio(msg.data, self.hello.sample_rate)
                    return AudioIn(msg.data)
                if msg.type == WSMsgType.TEXT:
                    if len(msg.data) > MAX_MESSAGE_BYTES:
                        raise ProtocolError(
                            "too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG
                        )
                    return parse_event(parse_text_message(msg.data))
                if msg.type == WSMsgType.ERROR and "too big" in str(self.ws.exception() or "").lower():
                    await self._fail(
                        ProtocolError(
                            "too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG
                        )
                    )
                return None  # CLOSE, CLOSING, CLOSED, ERROR
            except ProtocolError as exc:
                if exc.fatal:
                    await self._fail(exc)
                    return None
                log.info("bad message peer=%s code=%s %s", self.peer, exc.code, exc)
                await self.send_error(exc.code, str(exc))
        return None

    async def _send(self, coro_factory) -> None:
        if self.ws.closed:
            raise ConnectionResetError("websocket closed")
        async with self._send_lock:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
                # that arrives as the send completes, and the sender task then never ends.
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await coro_factory()
            except TimeoutError:
                log.warning("slow consumer peer=%s: closing", self.peer)
                if not self._given_up.done():
                    self._given_up.set_result(None)  # the session ends now, whenever the close gets out
                    if self._transport is not None:
                        asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE_S, self._drop)
                asyncio.ensure_future(
                    self.close(CloseCode.SLOW_CONSUMER, "client is not reading (slow consumer)")
                )
                raise ConnectionResetError("slow consumer") from None

    def _drop(self) -> None:
        # A transport closed with data still queued for the client stays open until that is read.
        t = self._transport
        if t is not None and (not t.is_closing() or t.get_write_buffer_size() > 0):
            log.info("slow consumer peer=%s: connection dropped (its close was not read)", self.peer)
            t.abort()

    async def send_message(self, message: dict) -> None:
        await self._send(lambda: self.ws.send_str(encode(message)))

    async def send_audio(self, frame: bytes) -> None:
        await self._send(lambda: self.ws.send_bytes(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.ws.closed:
            try:
                async with asyncio.timeout(2):
                    await self.ws.close(code=code, message=reason[:120].encode())
            except (TimeoutError, ConnectionError):
                pass

    @property
    def closed(self) -> bool:
        return self.ws.closed
