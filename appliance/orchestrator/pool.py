"""Which TTS worker serves a session.

The interface the rest of the orchestrator uses: ``start_session`` picks a worker (never one in
``exclude``) and opens the session there; ``mark_down`` takes a worker out of rotation after a
failure seen mid-stream (connection lost, deadline passed), so failover picks another; a worker
marked down is tried again (last) and is back in rotation once it accepts a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)

# A worker that died may be back on the same address within a second or two (systemd's
# Restart=on-failure): its channel reconnects at most 1 s apart, not after gRPC's default backoff
# that grows towards two minutes (RPCs on a channel in backoff fail at once).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000))


class TtsUnavailable(Exception):
    pass


class WorkerPool:
    """A static worker list: the first worker that accepts the session wins."""

    def __init__(self, addresses: list[str]) -> None:
        self.clients = [TTSClient(a, RECONNECT_OPTIONS) for a in addresses]
        self.down: set[str] = set()

    async def start_session(self, session_id: str, model_id: str = "", exclude: Iterable[str] = ()) -> TTSClient:
        skip = set(exclude)
        candidates = [c for c in self.clients if c.address not in skip]
        # Workers marked down are tried last, not never: on a static list they may be back.
        candidates.sort(key=lambda c: c.address in self.down)
        errors = []
        for client in candidates:
            try:
                await client.start_session(session_id, model_id)
                self.down.discard(client.address)
                return client
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{client.address}: {exc.code().name} {exc.details()}")
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # unknown model: same answer everywhere
                    break
        raise TtsUnavailable("no TTS worker accepted the session (" + "; ".join(errors or ["no workers available"]) + ")")

    def mark_down(self, address: str, reason: str) -> None:
        if address not in self.down:
            log.warning("worker marked down worker=%s reason=%s", address, reason)
        self.down.add(address)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
