"""What a transport hands the orchestrator: a duplex channel of audio and JSON events.

A transport knows nothing of sessions or models. It validates the wire protocol (Contract 2 of
DESIGN.md), turns each client message into one of the small dataclasses below, and sends back
audio frames and events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

MIN_RATE, MAX_RATE = 8000, 48000
MAX_AUDIO_MS = 100
MIN_AUDIO_MS = 10
MAX_MESSAGE_BYTES = 1 << 20


# Close codes (≥ 4000: application-defined, with a reason string).
class CloseCode:
    PROTOCOL = 4001  # binary before hello, no hello, hello twice
    BAD_RATE = 4002
    UNAUTHORIZED = 4003
    SLOW_CONSUMER = 4008
    TOO_BIG = 4009
    BUSY = 4029  # session limit reached
    UNAVAILABLE = 4503  # no TTS worker
    INTERNAL = 4500
    IDLE_TIMEOUT = 4100
    MAX_DURATION = 4101
    MAX_TURNS = 4102


@dataclass(frozen=True)
class Hello:
    sample_rate: int
    token: str | None = None
    voice: str | None = None


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes  # PCM16LE mono at Hello.sample_rate


@dataclass(frozen=True)
class TextTurn:
    text: str


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Bye:
    pass


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


class Channel(ABC):
    hello: Hello
    peer: str = "?"

    @abstractmethod
    async def receive(self) -> Inbound | None:
        """The next valid client message; None once the client is gone.
        Non-fatal protocol errors are reported to the client here and skipped."""

    @abstractmethod
    async def send_event(self, event: dict) -> None: ...

    @abstractmethod
    async def send_audio(self, frame: bytes) -> None: ...

    @abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    async def send_error(self, code: str, message: str) -> None:
        await self.send_event({"type": "error", "code": code, "message": message})
