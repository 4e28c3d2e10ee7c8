"""The WebSocket transport (path /ws, Contract 2 of DESIGN.md) on aiohttp."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from aiohttp import WSMsgType, web

from appliance.transport.base import (
    MAX_AUDIO_MS,
    MAX_MESSAGE_BYTES,
    MAX_RATE,
    MIN_RATE,
    AudioIn,
    Bye,
    Channel,
    CloseCode,
    Hello,
    Inbound,
    Interrupt,
    ProtocolError,
    Say,
    TextTurn,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 2.0
SEND_BUFFER_BYTES = 64 * 1024  # a client that cannot take one message in this long is not reading
MAX_TEXT_CHARS = 4000


def parse_hello(obj: dict) -> Hello:
    rate = obj.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(
            "unsupported_sample_rate",
            f"sample_rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz (got {rate!r})",
            CloseCode.BAD_RATE,
        )
    token, voice = obj.get("token"), obj.get("voice")
    for name, value in (("token", token), ("voice", voice)):
        if value is not None and not isinstance(value, str):
            raise ProtocolError("bad_message", f"{name} must be a string", CloseCode.PROTOCOL)
    return Hello(rate, token, voice)


def parse_text_message(raw: str) -> dict:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", 'a text message must be a JSON object with a string "type"')
    return obj


def parse_event(obj: dict) -> Inbound:
    kind = obj["type"]
    if kind in ("text", "say"):
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError("bad_message", f'"{kind}" needs a non-empty string "text"')
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError("text_too_long", f'"text" is limited to {MAX_TEXT_CHARS} characters (got {len(text)})')
        return TextTurn(text) if kind == "text" else Say(text)
    if kind == "interrupt":
        return Interrupt()
    if kind == "bye":
        return Bye()
    if kind == "hello":
        raise ProtocolError("bad_message", "hello was already received", None)
    raise ProtocolError("unknown_type", f"unknown message type {kind!r} (expected text, say, interrupt, bye)")


def check_audio(pcm: bytes, rate: int) -> None:
    if len(pcm) % 2:
        raise ProtocolError("bad_audio", f"PCM16 audio must have an even number of bytes (got {len(pcm)})")
    ms = len(pcm) / 2 / rate * 1000
    if ms > MAX_AUDIO_MS + 0.5:
        raise ProtocolError("audio_too_long", f"audio messages are limited to {MAX_AUDIO_MS} ms (got {ms:.0f} ms)")


class WebSocketChannel(Channel):
    def __init__(self, ws: web.WebSocketResponse, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self._send_lock = asyncio.Lock()

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
        channel.hello = None
        try:
            channel.hello = await asyncio.wait_for(channel._read_hello(), HELLO_TIMEOUT_S)
        except asyncio.TimeoutError:
            await channel._fail(ProtocolError("no_hello", f"no hello within {HELLO_TIMEOUT_S:.0f} s", CloseCode.PROTOCOL))
        except ProtocolError as exc:
            await channel._fail(exc)
        except ConnectionError:
            pass
        return channel

    async def _read_hello(self) -> Hello | None:
        msg = await self.ws.receive()
        if msg.type == WSMsgType.BINARY:
            raise ProtocolError("hello_required", 'send {"type":"hello","sample_rate":N} before any audio', CloseCode.PROTOCOL)
        if msg.type != WSMsgType.TEXT:
            return None
        obj = parse_text_message(msg.data)
        if obj["type"] != "hello":
            raise ProtocolError("hello_required", f'the first message must be hello (got {obj["type"]!r})', CloseCode.PROTOCOL)
        return parse_hello(obj)

    async def _fail(self, exc: ProtocolError) -> None:
        log.warning("protocol error peer=%s code=%s %s", self.peer, exc.code, exc)
        try:
            await self.send_error(exc.code, str(exc))
        except Exception:
            pass
        await self.close(exc.close_code or CloseCode.PROTOCOL, str(exc))

    async def receive(self) -> Inbound | None:
        while not self.ws.closed:
            msg = await self.ws.receive()
            try:
                if msg.type == WSMsgType.BINARY:
                    if len(msg.data) > MAX_MESSAGE_BYTES:
                        raise ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG)
                    check_audio(msg.data, self.hello.sample_rate)
                    return AudioIn(msg.data)
                if msg.type == WSMsgType.TEXT:
                    if len(msg.data) > MAX_MESSAGE_BYTES:
                        raise ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG)
                    return parse_event(parse_text_message(msg.data))
                if msg.type == WSMsgType.ERROR and "too big" in str(self.ws.exception() or "").lower():
                    await self._fail(ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", CloseCode.TOO_BIG))
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
                await asyncio.wait_for(coro_factory(), SEND_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("slow consumer peer=%s: closing", self.peer)
                asyncio.ensure_future(self.close(CloseCode.SLOW_CONSUMER, "client is not reading (slow consumer)"))
                raise ConnectionResetError("slow consumer") from None

    async def send_event(self, event: dict) -> None:
        await self._send(lambda: self.ws.send_str(json.dumps(event, separators=(",", ":"))))

    async def send_audio(self, frame: bytes) -> None:
        await self._send(lambda: self.ws.send_bytes(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(code=code, message=reason[:120].encode()), 2)
            except (asyncio.TimeoutError, ConnectionError):
                pass

    @property
    def closed(self) -> bool:
        return self.ws.closed
