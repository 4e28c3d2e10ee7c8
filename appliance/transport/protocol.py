"""The session protocol every transport speaks (docs/protocol.md): its messages as types.

Text messages are JSON objects with a ``"type"``; on WebSocket, binary messages are audio. The
WebSocket and WebRTC transports (and the clients in this package) all use this module, so the
wire format is written down once:

* client → server: ``parse_hello``/``parse_text_message``/``parse_event``/``check_audio`` turn what
  arrives into ``Hello``, ``AudioIn``, ``TextTurn``, ``Say``, ``Interrupt`` or ``Bye``, or raise
  ``ProtocolError`` (fatal ones carry the ``CloseCode`` the connection closes with);
* server → client: one frozen dataclass per message (``Ready``, ``StateChanged``, ``VadEvent``,
  ``Transcript``, ``ReplyText``, ``ReplyEnd``, ``BargeIn``, ``TurnMetrics``, ``ErrorEvent``), whose
  ``to_dict()`` is exactly the JSON object sent, keys in that order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from appliance.audio import FRAME_MS, OUTPUT_RATE

MIN_RATE, MAX_RATE = 8000, 48000  # the client's microphone rate, declared in hello
MIN_AUDIO_MS = 10
MAX_AUDIO_MS = 100  # one binary audio message
MAX_MESSAGE_BYTES = 1 << 20
MAX_TEXT_CHARS = 4000  # "text" and "say"


class CloseCode:
    """WebSocket close codes (≥ 4000: application-defined, sent with a reason string)."""

    PROTOCOL = 4001  # binary before hello, no hello, hello twice
    BAD_RATE = 4002
    UNAUTHORIZED = 4003
    ACCESS_DENIED = 4401  # no access secret (hello's token, or the pairing cookie), or a wrong one
    ORIGIN_REFUSED = 4403  # an Origin that is not one of the appliance's own names
    RATE_LIMITED = 4029  # too many session starts or wrong secrets from one address; says when to retry
    SLOW_CONSUMER = 4008
    TOO_BIG = 4009
    BUSY = 4029  # session limit reached
    UNAVAILABLE = 4503  # no TTS worker
    INTERNAL = 4500
    IDLE_TIMEOUT = 4100
    MAX_DURATION = 4101
    MAX_TURNS = 4102


# --- client → server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    sample_rate: int
    token: str | None = None
    voice: str | None = None

    def to_dict(self) -> dict:
        """The hello a client sends (optional fields only when set)."""
        message: dict = {"type": "hello", "sample_rate": self.sample_rate}
        if self.token is not None:
            message["token"] = self.token
        if self.voice is not None:
            message["voice"] = self.voice
        return message


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes  # PCM16LE mono at Hello.sample_rate


@dataclass(frozen=True)
class TextTurn:
    """A typed user turn, answered like a spoken one."""

    text: str


@dataclass(frozen=True)
class Say:
    """Text to speak as it is."""

    text: str


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Bye:
    def to_dict(self) -> dict:
        return {"type": "bye"}


Inbound = AudioIn | TextTurn | Say | Interrupt | Bye


class ProtocolError(Exception):
    """A client message that breaks the protocol. Fatal ones close the connection with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code

    @property
    def fatal(self) -> bool:
        return self.close_code is not None


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
    """A text message → its JSON object, which has a string ``"type"``."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"message is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None
    except RecursionError:  # "[[[[…" a million deep: the parser's recursion, not the client's problem
        raise ProtocolError("bad_json", "message is nested too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", 'a text message must be a JSON object with a string "type"')
    return obj


def parse_event(obj: dict) -> Inbound:
    """A message after hello (from ``parse_text_message``) → its type."""
    kind = obj["type"]
    if kind in ("text", "say"):
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError("bad_message", f'"{kind}" needs a non-empty string "text"')
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(
                "text_too_long", f'"text" is limited to {MAX_TEXT_CHARS} characters (got {len(text)})'
            )
        return TextTurn(text) if kind == "text" else Say(text)
    if kind == "interrupt":
        return Interrupt()
    if kind == "bye":
        return Bye()
    if kind == "hello":
        raise ProtocolError("bad_message", "hello was already received", None)
    raise ProtocolError("unknown_type", f"unknown message type {kind!r} (expected text, say, interrupt, bye)")


def check_audio(pcm: bytes, rate: int) -> None:
    """A binary audio message must be whole PCM16 samples and at most ``MAX_AUDIO_MS`` long."""
    if len(pcm) % 2:
        raise ProtocolError("bad_audio", f"PCM16 audio must have an even number of bytes (got {len(pcm)})")
    ms = len(pcm) / 2 / rate * 1000
    if ms > MAX_AUDIO_MS + 0.5:
        raise ProtocolError(
            "audio_too_long", f"audio messages are limited to {MAX_AUDIO_MS} ms (got {ms:.0f} ms)"
        )


# --- server → client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEvent:
    """A server → client message: ``to_dict()`` is ``{"type": TYPE, field: value, …}`` in field order."""

    type: ClassVar[str]

    def to_dict(self) -> dict:
        return {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class Ready(ServerEvent):
    """The session is open; reply audio comes at ``sample_rate`` in ``frame_ms`` frames."""

    type: ClassVar[str] = "ready"
    session_id: str
    sample_rate: int = OUTPUT_RATE
    frame_ms: int = FRAME_MS
    responder: str | None = None  # what answers ("echo", "embedded <model file>", …); left out when not given

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["responder"] is None:
            del d["responder"]
        return d


SessionState = Literal["IDLE", "LISTENING", "SPEAKING", "BARGED_IN", "WAITING_FOR_INPUT", "TERMINATED"]


@dataclass(frozen=True)
class StateChanged(ServerEvent):
    """Sent on every transition of the session's state machine."""

    type: ClassVar[str] = "state"
    state: SessionState


@dataclass(frozen=True)
class VadEvent(ServerEvent):
    type: ClassVar[str] = "vad"
    event: Literal["speech_start", "speech_end"]


@dataclass(frozen=True)
class Transcript(ServerEvent):
    """What the user said: partial (``final`` false) while they speak, final once the turn ends."""

    type: ClassVar[str] = "transcript"
    text: str
    final: bool


@dataclass(frozen=True)
class ReplyText(ServerEvent):
    """The responder's text, a sentence at a time, as it is spoken."""

    type: ClassVar[str] = "reply"
    text: str


@dataclass(frozen=True)
class ReplyEnd(ServerEvent):
    """The reply's audio has been sent in full."""

    type: ClassVar[str] = "reply_end"


@dataclass(frozen=True)
class BargeIn(ServerEvent):
    """The user spoke over the reply (or interrupted it): its audio stops here."""

    type: ClassVar[str] = "barge_in"


@dataclass(frozen=True)
class TurnMetrics(ServerEvent):
    """One turn's timings in milliseconds (None: not measured in this turn). ``extra`` holds
    further timings a turn may report (e.g. ``asr_queue_ms``); they follow the named ones."""

    type: ClassVar[str] = "metrics"
    endpoint_ms: float | None = None
    asr_ms: float | None = None
    responder_ms: float | None = None
    tts_first_frame_ms: float | None = None
    voice_to_voice_ms: float | None = None
    extra: Mapping[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        message = super().to_dict()
        del message["extra"]
        message.update(self.extra)
        return message


@dataclass(frozen=True)
class ErrorEvent(ServerEvent):
    """A machine-readable ``code`` and a sentence for people; fatal ones are followed by a close."""

    type: ClassVar[str] = "error"
    code: str
    message: str


def to_message(event: ServerEvent | dict) -> dict:
    """The JSON object for ``event``; a plain dict passes through (kept until the orchestrator switches)."""
    return event if isinstance(event, dict) else event.to_dict()


def encode(message: dict) -> str:
    """A message as it goes on the wire: compact JSON."""
    return json.dumps(message, separators=(",", ":"))
