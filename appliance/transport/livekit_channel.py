"""One LiveKit room as a duplex channel (the ``livekit`` rtc SDK): the person's microphone and events
in, reply audio and events out.

Uplink: the person's microphone track, resampled and down-mixed by the SDK to mono PCM16 16 kHz
(whatever rate and channels it was published at; 16 kHz is what the VAD and Whisper take, and the
SDK's resampler adds less delay than resampling it again in the session) → ``AudioIn``, at most
2 s queued (the oldest audio is dropped if the session lags). Downlink: ``send_audio()`` captures the pacer's 20 ms frames into a
48 kHz mono ``AudioSource`` published as the agent's track; its queue is cleared on ``interrupt`` and
``barge_in`` so a stopped reply ends at once, and given back to the pacer when it holds (speech over
the reply: ``take_back``), so the reply goes quiet at the first voiced frame. Events: the WebSocket
protocol's JSON messages on the data topic ``"events"``, reliable, addressed to the person only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livekit import rtc

from appliance.audio import FRAME_MS, FRAME_SAMPLES, OUTPUT_RATE
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

log = logging.getLogger(__name__)

RATE = OUTPUT_RATE
MIC_RATE = 16000
TOPIC = "events"
MAX_INBOUND_S = 2.0  # microphone audio queued for a lagging session before the oldest is dropped
# The SDK's capture queue: the pacer's lead plus the slack one event-loop stall may add (a barge-in
# clears it, so the slack never reaches the listener as extra reply audio).
STALL_SLACK_MS = 200
DISCONNECT_TIMEOUT_S = 5.0
# A send never waits forever: a capture that the SDK does not drain within this (its queue holds
# under half a second), or a data packet not taken, means the room is going; the session then ends.
SEND_TIMEOUT_S = 3.0


class LiveKitChannel(Channel):
    def __init__(
        self, room: rtc.Room, name: str, person: str, *, max_lead_ms: int = 100, voice: str | None = None
    ):
        self.room, self.person = room, person
        self.peer = f"livekit:{name}/{person}"
        self.hello = Hello(sample_rate=MIC_RATE, voice=voice)
        self.session_id: str | None = None
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=max_lead_ms + FRAME_MS + STALL_SLACK_MS)
        self.track = rtc.LocalAudioTrack.create_audio_track("reply", self.source)
        self.microphone = asyncio.Event()  # the person's microphone is subscribed
        self.finished = asyncio.Event()
        self.inbox = Inbox(MIC_RATE, MAX_INBOUND_S, self._where)
        self._ended = self._closing = False
        self._tasks: set[asyncio.Task] = set()
        room.on("track_subscribed", self._on_track)
        room.on("data_received", self._on_data)
        room.on("participant_disconnected", self._on_left)
        room.on("disconnected", lambda reason=None: self._end(f"disconnected from the room ({reason})"))

    def _where(self) -> str:
        return f"peer={self.peer} session={self.session_id or '-'}"

    async def publish(self) -> None:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(self.track, options)

    def _on_track(self, track: rtc.Track, publication, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self.person or track.kind != rtc.TrackKind.KIND_AUDIO:
            log.info("ignoring track %s of %s %s", publication.sid, participant.identity, self._where())
            return
        if self.microphone.is_set():
            log.info("a second microphone track ignored %s", self._where())
            return
        log.info("microphone subscribed %s", self._where())
        self.microphone.set()
        stream = rtc.AudioStream(track, sample_rate=MIC_RATE, num_channels=1)
        _spawn(self._tasks, self._read_audio(stream))

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.person:
            self._end("the person left the room")

    def _end(self, why: str) -> None:
        if not self._ended:
            log.info("peer gone (%s) %s", why, self._where())
            self._ended = True
            self.inbox.close()
        if not self._closing:
            _spawn(self._tasks, self.close())

    async def _read_audio(self, stream: rtc.AudioStream) -> None:
        try:
            async for event in stream:
                if self._ended:
                    break
                if self.inbox.consuming:
                    self.inbox.put_audio(event.frame.data.tobytes())
        except Exception:
            log.exception("microphone stream failed %s", self._where())
        finally:
            # The SDK's close waits for the stream's end from its native side: bounded, since a
            # room torn down under it may never send one, and the session must still end.
            try:
                await asyncio.wait_for(stream.aclose(), DISCONNECT_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "the microphone stream did not close in %.0f s %s", DISCONNECT_TIMEOUT_S, self._where()
                )

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC or packet.participant is None or packet.participant.identity != self.person:
            return
        try:
            if len(packet.data) > MAX_MESSAGE_BYTES:
                raise ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
            try:
                text = packet.data.decode()
            except UnicodeDecodeError:
                raise ProtocolError(
                    "bad_message", "events are JSON text; audio goes on the audio track"
                ) from None
            obj = parse_text_message(text)
            if obj["type"] == "hello":
                log.info("hello ignored (not needed on LiveKit) %s", self._where())
                return
            message = parse_event(obj)
        except ProtocolError as exc:
            log.info("bad message %s code=%s %s", self._where(), exc.code, exc)
            _spawn(self._tasks, self._send_quietly(ErrorEvent(exc.code, str(exc))))
            return
        log.info("event in %s type=%s", self._where(), obj["type"])
        if isinstance(message, Interrupt):
            self.source.clear_queue()  # cut the reply now; the session stops feeding more
        self.inbox.put(message)

    async def receive(self) -> Inbound | None:
        return await self.inbox.get()

    async def send_message(self, message: dict) -> None:
        if self._ended or not self.room.isconnected():
            raise ConnectionResetError("the room is gone")
        kind = message.get("type")
        if kind == Ready.type:
            self.session_id = message.get("session_id")
        elif kind == BargeIn.type:
            self.source.clear_queue()
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.room.local_participant.publish_data(
                    encode(message), reliable=True, topic=TOPIC, destination_identities=[self.person]
                )
        except TimeoutError:
            raise ConnectionResetError(f"an event was not taken in {SEND_TIMEOUT_S:.0f} s") from None

    async def _send_quietly(self, event: ServerEvent) -> None:
        with contextlib.suppress(Exception):
            await self.send_event(event)

    async def send_audio(self, frame: bytes) -> None:
        if self._ended:
            raise ConnectionResetError("the room is gone")
        samples = len(frame) // 2
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.source.capture_frame(rtc.AudioFrame(frame, RATE, 1, samples or FRAME_SAMPLES))
        except TimeoutError:
            raise ConnectionResetError(f"reply audio was not drained in {SEND_TIMEOUT_S:.0f} s") from None

    def take_back(self) -> int:
        # The SDK knows its queue by time, not frames: round to whole frames.
        frames = round(self.source.queued_duration * 1000 / FRAME_MS)
        self.source.clear_queue()
        return frames

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            await self.finished.wait()
            return
        self._closing = True
        log.info("closing %s code=%d reason=%s", self._where(), code, reason or "-")
        try:
            if code == 1001 and not self._ended:  # no close frame here: say why before leaving
                await self._send_quietly(ErrorEvent("going_away", reason or "server shutting down"))
            self._ended = True
            self.inbox.close()
            self.source.clear_queue()
            try:
                await asyncio.wait_for(self.room.disconnect(), DISCONNECT_TIMEOUT_S)
            except TimeoutError:
                log.warning("leaving the room took over %.0f s %s", DISCONNECT_TIMEOUT_S, self._where())
            others = [t for t in self._tasks if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self.source.aclose()
        finally:
            self.finished.set()
            log.info("left the room %s", self._where())

    @property
    def closed(self) -> bool:
        return self._ended or self._closing


def _spawn(tasks: set[asyncio.Task], coro) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
