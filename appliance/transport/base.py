"""What a transport hands the orchestrator: a duplex channel of audio and protocol messages.

A transport knows nothing of sessions or models. It validates the wire protocol
(``appliance.transport.protocol``, described in docs/protocol.md), turns each client message into
one of that module's dataclasses, and sends back audio frames and typed server events."""

from __future__ import annotations

from abc import ABC, abstractmethod

from appliance.transport.protocol import ErrorEvent, Hello, Inbound, ServerEvent, to_message


class Channel(ABC):
    hello: Hello
    peer: str = "?"

    @abstractmethod
    async def receive(self) -> Inbound | None:
        """The next valid client message; None once the client is gone.
        Non-fatal protocol errors are reported to the client here and skipped."""

    async def send_event(self, event: ServerEvent | dict) -> None:
        """Send one server → client event. (A plain dict is still taken: kept until the orchestrator switches.)"""
        await self.send_message(to_message(event))

    @abstractmethod
    async def send_message(self, message: dict) -> None:
        """Put one JSON message (an event's ``to_dict()``) on the wire."""

    @abstractmethod
    async def send_audio(self, frame: bytes) -> None: ...

    def take_back(self) -> int:
        """Drop the reply audio this channel holds but has not played yet, and say how many 20 ms
        frames that was (the pacer sends them again if the reply goes on). 0 where none can be
        taken back: a WebSocket client plays from a buffer of its own."""
        return 0

    @abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    async def send_error(self, code: str, message: str) -> None:
        await self.send_event(ErrorEvent(code, message))
