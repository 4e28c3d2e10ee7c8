"""A session's limits on the inbound side: how long it may last and how long it may stay idle."""

from __future__ import annotations

import asyncio
import time

from appliance.config import SessionSettings
from appliance.transport.base import Channel
from appliance.transport.protocol import CloseCode


class SessionEnded(Exception):
    """The session ends on a limit: ``code`` goes to the client in an error event, then the close."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


class SessionLimits:
    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self._started = time.monotonic()
        self._last_activity = time.monotonic()

    async def receive(self, channel: Channel):
        """The channel's next message; raises :class:`SessionEnded` once a time limit is reached."""
        s = self.settings
        idle_left = s.idle_timeout_s - (time.monotonic() - self._last_activity)
        total_left = s.max_duration_s - (time.monotonic() - self._started)
        if total_left <= 0:
            raise self._max_duration()
        try:
            async with asyncio.timeout(max(0.01, min(idle_left, total_left))):
                message = await channel.receive()
        except TimeoutError:
            if time.monotonic() - self._started >= s.max_duration_s:
                raise self._max_duration() from None
            raise SessionEnded(
                "idle_timeout",
                f"no input for {s.idle_timeout_s:.0f} s; session closed",
                CloseCode.IDLE_TIMEOUT,
            ) from None
        if message is not None:
            self._last_activity = time.monotonic()
        return message

    def _max_duration(self) -> SessionEnded:
        return SessionEnded(
            "max_duration",
            f"this session reached its maximum duration of {self.settings.max_duration_s:.0f} s",
            CloseCode.MAX_DURATION,
        )
