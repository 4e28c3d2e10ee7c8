"""Bad input over the real WebSocket gets an error or a close code ≥ 4000 with a reason; the
worker session is ended and the server keeps serving others."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import aiohttp
import numpy as np
import pytest

from appliance.transport.ws_client import WsClient
from appliance.tts.client import TTSClient


async def _raw(url: str):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url, max_msg_size=4 << 20)
    return session, ws


async def _close_of(ws) -> tuple[int, list[dict]]:
    events = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            events.append(json.loads(msg.data))
    return ws.close_code, events


async def test_binary_before_hello_closes_with_a_reason(orchestrator):
    session, ws = await _raw(orchestrator.url)
    await ws.send_bytes(b"\x00\x00" * 160)
    code, events = await asyncio.wait_for(_close_of(ws), 10)
    await session.close()
    assert code == 4001
    assert events[0]["type"] == "error" and events[0]["code"] == "hello_required"


@pytest.mark.parametrize("rate", [4000, 96000, "16000", None])
async def test_unsupported_sample_rate_is_refused(orchestrator, rate):
    session, ws = await _raw(orchestrator.url)
    await ws.send_str(json.dumps({"type": "hello", "sample_rate": rate}))
    code, events = await asyncio.wait_for(_close_of(ws), 10)
    await session.close()
    assert code == 4002
    assert "8000" in events[0]["message"] and "48000" in events[0]["message"]


async def test_non_fatal_errors_keep_the_session(orchestrator):
    client = WsClient(orchestrator.url)
    await client.connect(16000)
    await client.send_json({"oops": 1})
    await client.ws.send_str("{not json")
    await client.send_json({"type": "dance"})
    await client.send_bytes(b"\x01\x02\x03")  # odd length
    await client.send_bytes(np.zeros(16000 // 5, np.int16).tobytes())  # 200 ms in one message
    await client.send_json({"type": "text", "text": ""})
    await client.wait_for(lambda: len(client.rx.of_type("error")) >= 6, 10)
    codes = [e["code"] for e in client.rx.of_type("error")]
    assert codes == ["bad_message", "bad_json", "unknown_type", "bad_audio", "audio_too_long", "bad_message"]
    # Still serving this session.
    await client.send_json({"type": "text", "text": "are you still there"})
    await client.wait_for(lambda: client.rx.of_type("metrics"), 30)
    await client.close()


async def test_a_message_over_one_megabyte_closes(orchestrator):
    client = WsClient(orchestrator.url)
    await client.connect(16000)
    await client.send_bytes(b"\x00" * (1 << 20) + b"\x00\x00")
    with pytest.raises(ConnectionError):
        await client.wait_for(lambda: False, 10)
    assert client.rx.closed[0] == 4009
    await client.close()


async def test_client_vanishing_mid_reply_ends_its_worker_session(orchestrator, piper_worker):
    async with TTSClient(piper_worker.address) as worker:
        for _ in range(100):  # sessions of earlier tests finish closing first
            if (await worker.capabilities()).active_sessions == 0:
                break
            await asyncio.sleep(0.1)
        before = (await worker.capabilities()).active_sessions
        assert before == 0
        client = WsClient(orchestrator.url)
        await client.connect(16000)
        assert (await worker.capabilities()).active_sessions == before + 1
        await client.send_json(
            {"type": "say", "text": "This is a long reply that the client will not wait for. " * 4}
        )
        await client.wait_for(lambda: len(client.rx.frames) > 5, 30)
        await client.ws.close()  # gone, without bye
        await client._session.close()
        for _ in range(50):
            if (await worker.capabilities()).active_sessions == before:
                break
            await asyncio.sleep(0.1)
        assert (await worker.capabilities()).active_sessions == before
    # The server still serves others.
    other = WsClient(orchestrator.url)
    await other.connect(16000)
    await other.send_json({"type": "text", "text": "hello again"})
    await other.wait_for(lambda: other.rx.of_type("metrics"), 30)
    await other.close()


async def test_five_sessions_at_once(orchestrator):
    clients = [WsClient(orchestrator.url) for _ in range(5)]
    await asyncio.gather(*(c.connect(16000) for c in clients))
    ids = {c.ready["session_id"] for c in clients}
    assert len(ids) == 5
    await asyncio.gather(
        *(c.send_json({"type": "text", "text": f"number {i}"}) for i, c in enumerate(clients))
    )
    await asyncio.gather(*(c.wait_for(lambda c=c: c.rx.of_type("reply_end"), 60) for c in clients))
    for i, c in enumerate(clients):
        assert f"number {i}" in " ".join(e["text"] for e in c.rx.of_type("reply")).lower()
        assert c.rx.frames and all(len(f) == 1920 for _, f in c.rx.frames)
    await asyncio.gather(*(c.close() for c in clients))


def _raw_websocket(port: int) -> socket.socket:
    """A WebSocket client on a bare socket with a tiny receive buffer, that will stop reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0]
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    payload, mask = text.encode(), os.urandom(4)
    header = bytes([0x81]) + (
        bytes([0x80 | len(payload)])
        if len(payload) < 126
        else bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    )
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _close_code(sock: socket.socket, timeout: float) -> int | None:
    """Read frames until the server's close frame; its status code."""
    sock.settimeout(timeout)
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    while True:
        b0, b1 = need(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", need(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", need(8))[0]
        payload = need(length)
        if b0 & 0x0F == 0x8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


async def test_a_client_that_stops_reading_is_closed_as_a_slow_consumer(orchestrator):
    sock = _raw_websocket(orchestrator.port)
    try:
        _send_text(sock, json.dumps({"type": "hello", "sample_rate": 16000}))
        _send_text(sock, json.dumps({"type": "say", "text": "A long reply that nobody reads. " * 40}))
        await asyncio.sleep(12)  # read nothing: the buffers fill and the server's sends stall
        code = await asyncio.to_thread(_close_code, sock, 30)
        assert code == 4008
    finally:
        sock.close()
