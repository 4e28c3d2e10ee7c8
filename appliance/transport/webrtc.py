"""The WebRTC transport (aiortc): ``POST /webrtc/offer`` turns a browser's peer connection into a Channel.

Signalling is one request, no trickle ICE: the client gathers its candidates, posts
``{"sdp", "type": "offer"}`` and gets ``{"sdp", "type": "answer"}`` with all of ours. The offer
carries a data channel labelled ``"events"`` (the session protocol's JSON messages, both ways; no hello)
and one ``sendrecv`` audio transceiver: the microphone comes in on it and reply audio goes out on it.

Uplink: remote frames, each decoded as soon as its packet is in order (no playout prefetch) →
mono PCM16 48 kHz → ``AudioIn`` (a queue of at most 2 s; the oldest audio is dropped if the
session lags). Downlink: ``send_audio()`` queues 20 ms frames that an outgoing track plays in real
time, silence in between; the queue holds at most the pacer's lead plus one frame and one loop
stall's slack, it is flushed on ``interrupt`` and ``barge_in`` so a stopped reply ends at once, and
when the pacer holds (speech over the reply) it gives back what it has not played (``take_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.audio import FRAME_MS
from appliance.transport.base import Channel
from appliance.transport.inbox import Inbox
from appliance.transport.protocol import (
    MAX_MESSAGE_BYTES,
    BargeIn,
    ErrorEvent,
    Hello,
    Inbound,
    Interrupt,
    ProtocolError,
    Ready,
    ServerEvent,
    encode,
    parse_event,
    parse_text_message,
)
from appliance.transport.webrtc_audio import RATE, Downmixer, OutboundAudio, decode_on_arrival

log = logging.getLogger(__name__)

MAX_INBOUND_S = 2.0  # microphone audio queued for a lagging session before the oldest is dropped
CONNECT_TIMEOUT_S = 30.0  # the peer must open its "events" data channel this soon after the answer
CLOSE_DRAIN_S = 0.5  # how long close() lets queued events reach the client
DRAIN_POLL_S = 0.02
PC_CLOSE_TIMEOUT_S = 5.0
# When the event loop stalls past 100 ms the track moves its schedule later while the pacer keeps to
# the wall clock, so up to one stall's worth of frames more than the pacer's lead can be queued; a
# barge-in flushes the queue, so this slack never reaches the listener as extra reply audio.
STALL_SLACK_FRAMES = 10
MAX_BUFFERED_BYTES = 1 << 20  # events not yet taken by the client: more means it is not reading
MAX_SDP_CHARS = 100_000
LABEL = "events"


def ice_server(url: str) -> RTCIceServer:
    """``stun:host:3478`` or ``turn:user:pass@host:3478`` → RTCIceServer."""
    scheme, _, rest = url.partition(":")
    creds, _, hostport = rest.rpartition("@")
    if not creds:
        return RTCIceServer(urls=url)
    user, _, password = creds.partition(":")
    return RTCIceServer(urls=f"{scheme}:{hostport}", username=user, credential=password)


class WebRtcChannel(Channel):
    """One peer connection as a duplex channel: microphone and events in, reply audio and events out."""

    def __init__(self, pc: RTCPeerConnection, peer: str, max_lead_ms: int = 100) -> None:
        self.pc, self.peer, self.hello = pc, peer, Hello(sample_rate=RATE)
        self.session_id: str | None = None  # learnt from the ready event, for the logs
        self.outbound = OutboundAudio(max_frames=max_lead_ms // FRAME_MS + 1 + STALL_SLACK_FRAMES)
        self.dc = None
        self.opened = asyncio.Event()  # the "events" data channel is open
        self.finished = asyncio.Event()  # the PC is closed and every task ended
        self.inbox = Inbox(RATE, MAX_INBOUND_S, self._where)
        self._ended = self._closing = False
        self._downmix = Downmixer()
        self._tasks: set[asyncio.Task] = set()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    def _where(self) -> str:
        return f"peer={self.peer} session={self.session_id or '-'}"

    def _on_track(self, track: MediaStreamTrack) -> None:
        log.info("remote %s track %s", track.kind, self._where())
        if track.kind == "audio":
            _spawn(self._tasks, self._read_audio(track))

    def _on_datachannel(self, dc) -> None:
        if dc.label != LABEL or self.dc is not None:
            log.info("ignoring data channel %r %s", dc.label, self._where())
            return
        self.dc = dc
        dc.on("message", self._on_message)
        dc.on("close", lambda: self._end("data channel closed"))
        self._on_open() if dc.readyState == "open" else dc.on("open", self._on_open)

    def _on_open(self) -> None:
        log.info("data channel %r open %s", LABEL, self._where())
        self.opened.set()

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("connection %s %s", state, self._where())
        if state in ("failed", "closed"):
            self._end(f"connection {state}")

    def _end(self, why: str) -> None:
        """The peer is gone (or going): receive() returns None and everything is released."""
        if not self._ended:
            log.info("peer gone (%s) %s", why, self._where())
            self._ended = True
            self.inbox.close()
        if not self._closing:
            _spawn(self._tasks, self.close())

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while not self._ended:
                frame = await track.recv()
                pcm = self._downmix(frame)
                if pcm and self.inbox.consuming:
                    self.inbox.put_audio(pcm)
        except MediaStreamError:
            log.info("remote audio track ended %s", self._where())
        except Exception:
            log.exception("remote audio failed %s", self._where())

    def _on_message(self, data) -> None:
        try:
            if not isinstance(data, str):
                raise ProtocolError("bad_message", "events are JSON text; audio goes on the audio track")
            if len(data) > MAX_MESSAGE_BYTES:
                raise ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
            obj = parse_text_message(data)
            if obj["type"] == "hello":
                log.info("hello ignored (not needed on WebRTC) %s", self._where())
                return
            message = parse_event(obj)
        except ProtocolError as exc:
            log.info("bad message %s code=%s %s", self._where(), exc.code, exc)
            _spawn(self._tasks, self._send_quietly(ErrorEvent(exc.code, str(exc))))
            return
        log.info("event in %s type=%s", self._where(), obj["type"])
        if isinstance(message, Interrupt):
            self.outbound.flush()  # cut the reply now; the session stops feeding more
        self.inbox.put(message)

    async def receive(self) -> Inbound | None:
        return await self.inbox.get()

    async def send_message(self, message: dict) -> None:
        dc = self.dc
        if self._ended or dc is None or dc.readyState != "open":
            raise ConnectionResetError("data channel closed")
        if dc.bufferedAmount > MAX_BUFFERED_BYTES:
            log.warning("slow consumer %s: closing", self._where())
            self._end("client is not reading its events")
            raise ConnectionResetError("slow consumer")
        kind = message.get("type")
        if kind == Ready.type:
            self.session_id = message.get("session_id")
        elif kind == BargeIn.type:
            self.outbound.flush()
        dc.send(encode(message))
        log.debug("event out %s type=%s", self._where(), kind)

    async def _send_quietly(self, event: ServerEvent) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send_event(event)

    async def send_audio(self, frame: bytes) -> None:
        if self._ended or self.outbound.readyState != "live":
            raise ConnectionResetError("peer connection closed")
        self.outbound.push(frame)

    def take_back(self) -> int:
        return self.outbound.flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            await self.finished.wait()
            return
        self._closing = True
        log.info("closing %s code=%d reason=%s", self._where(), code, reason or "-")
        try:
            dc = self.dc
            if dc is not None and dc.readyState == "open" and not self._ended:
                if (
                    code == 1001
                ):  # no close frame on WebRTC: say why, as the session does before its own closes
                    await self._send_quietly(ErrorEvent("going_away", reason or "server shutting down"))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + CLOSE_DRAIN_S
                while dc.bufferedAmount and loop.time() < deadline and not self._ended:
                    await asyncio.sleep(
                        DRAIN_POLL_S
                    )  # let the last events (error, TERMINATED) reach the client
                dc.close()
            self._ended = True
            self.inbox.close()
            self.outbound.stop()
            try:
                await asyncio.wait_for(self.pc.close(), PC_CLOSE_TIMEOUT_S)
            except TimeoutError:  # aiortc's own tasks were cancelled under it (loop shutdown)
                log.warning("peer connection did not close in %.0f s %s", PC_CLOSE_TIMEOUT_S, self._where())
            others = [t for t in self._tasks if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        finally:
            self.finished.set()
            log.info("peer closed %s", self._where())

    @property
    def closed(self) -> bool:
        return self._ended or self._closing


class WebRtcEndpoint:
    """``POST /webrtc/offer``: one RTCPeerConnection per offer, handed to ``converse`` once its
    data channel opens, kept until it closes or fails. ``peers`` are the live ones."""

    def __init__(
        self,
        converse: Callable[[WebRtcChannel], Awaitable[None]],
        *,
        ice_servers: list[str] | None = None,
        max_peers: int = 16,
        max_lead_ms: int = 100,
    ) -> None:
        self.converse = converse
        self.ice_servers = [ice_server(u) for u in ice_servers or []]
        self.max_peers = max_peers
        self.max_lead_ms = max_lead_ms
        self.peers: set[WebRtcChannel] = set()
        self._tasks: set[asyncio.Task] = set()

    async def offer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, too deep
            return _error(400, 'the body must be JSON: {"sdp": "...", "type": "offer"}')
        sdp = body.get("sdp") if isinstance(body, dict) else None
        if (
            not isinstance(sdp, str)
            or not sdp.strip()
            or len(sdp) > MAX_SDP_CHARS
            or body.get("type") != "offer"
        ):
            return _error(
                400,
                f'expected {{"sdp": "...", "type": "offer"}} with at most {MAX_SDP_CHARS} characters of SDP',
            )
        if len(self.peers) >= self.max_peers:
            log.warning("offer refused from %s: %d peers connected", request.remote, len(self.peers))
            return _error(503, f"the appliance is serving its maximum of {self.max_peers} WebRTC peers")

        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
        channel = WebRtcChannel(pc, f"{request.remote or '?'}#{uuid.uuid4().hex[:6]}", self.max_lead_ms)
        self.peers.add(channel)
        log.info("offer peer=%s (%d peers)", channel.peer, len(self.peers))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if pc.sctp is None:
                raise ValueError(f"it has no data channel (create one labelled {LABEL!r} before the offer)")
            if any(t.kind == "audio" for t in pc.getTransceivers()):
                pc.addTrack(channel.outbound)  # reuses the offered transceiver: sendrecv
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "audio" and not decode_on_arrival(transceiver.receiver):
                        log.warning(
                            "this aiortc's jitter buffer is not where expected: ~80 ms more uplink "
                            "delay peer=%s",
                            channel.peer,
                        )
            else:
                log.warning("offer without audio peer=%s: events only", channel.peer)
            await pc.setLocalDescription(await pc.createAnswer())  # waits for ICE gathering
        except Exception as exc:  # noqa: BLE001 — aiortc rejects a bad offer with many exception types
            log.warning("bad offer peer=%s: %s", channel.peer, exc)
            self.peers.discard(channel)
            await channel.close()
            return _error(400, f"cannot use this offer: {exc or type(exc).__name__}")
        _spawn(self._tasks, self._run(channel))
        answer = pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    async def _run(self, channel: WebRtcChannel) -> None:
        try:
            opened = asyncio.ensure_future(channel.opened.wait())
            gone = asyncio.ensure_future(channel.finished.wait())
            await asyncio.wait({opened, gone}, timeout=CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (opened, gone):
                waiter.cancel()
            if channel.opened.is_set() and not channel.closed:
                await self.converse(channel)
            elif not channel.closed:
                log.warning(
                    "peer=%s did not open its %r data channel in %.0f s",
                    channel.peer,
                    LABEL,
                    CONNECT_TIMEOUT_S,
                )
        except Exception:
            log.exception("WebRTC session failed peer=%s", channel.peer)
        finally:
            await channel.close()
            self.peers.discard(channel)
            log.info("peer released peer=%s (%d peers)", channel.peer, len(self.peers))

    async def close(self) -> None:
        """Close every peer and wait for their sessions to end."""
        await asyncio.gather(
            *(c.close(1001, "server shutting down") for c in list(self.peers)), return_exceptions=True
        )
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _spawn(tasks: set[asyncio.Task], coro) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
