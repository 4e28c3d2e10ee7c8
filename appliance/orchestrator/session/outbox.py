"""A session's outbound events, in order: one sender task, so that inbound handling never waits
on the client."""

from __future__ import annotations

import asyncio

from appliance.transport.base import Channel
from appliance.transport.protocol import ServerEvent


class Outbox:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[ServerEvent] = asyncio.Queue()
        self._sender: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._sender = asyncio.ensure_future(self._send())

    def emit(self, event: ServerEvent) -> None:
        self._queue.put_nowait(event)

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait (a while) until every event emitted so far has been sent."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            pass

    async def close(self) -> None:
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send(self) -> None:
        # The flag, as well as the cancellation: a cancellation that arrives as a send completes can
        # be lost in the transport's timeout handling, and the loop must end all the same.
        while not self._closing:
            event = await self._queue.get()
            try:
                await self.channel.send_event(event)
            except ConnectionError:
                pass
            finally:
                self._queue.task_done()
