"""The LiveKit transport: ``POST /livekit/token`` opens a room for one conversation.

The orchestrator names a new room (``<room_prefix><random id>``), joins it itself as the agent
(``agent_name``, publishing the reply track), and answers the page with ``{"url", "token", "room",
"identity"}``: a short-lived token (``token_ttl_s``) that lets one person join that room only and
publish only a microphone and data. Once the person's microphone is subscribed the room becomes a
:class:`LiveKitChannel` handed to ``converse``; when the person leaves, the session ends and the
agent leaves the room. The API key and secret sign tokens and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web
from livekit import api, rtc

from appliance.config import LiveKitSettings
from appliance.transport.livekit_channel import LiveKitChannel

log = logging.getLogger(__name__)

MAX_VOICE_CHARS = 200
CLOSE_WAIT_S = 10.0  # how long a shutdown waits for the rooms' sessions to end before cancelling them


class LiveKitEndpoint:
    """Rooms the agent is in (``channels``), one per token handed out, until their sessions end."""

    def __init__(
        self,
        converse: Callable[[LiveKitChannel], Awaitable[None]],
        settings: LiveKitSettings,
        *,
        max_lead_ms: int = 100,
    ) -> None:
        self.converse = converse
        self.settings = settings
        self.max_lead_ms = max_lead_ms
        self._secret = settings.secret()
        self.channels: set[LiveKitChannel] = set()
        self._tasks: set[asyncio.Task] = set()

    def mint(self, room: str, identity: str, *, agent: bool = False) -> str:
        """A token for ``identity`` in ``room`` alone: the person may publish a microphone and data."""
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            can_publish_sources=["microphone"],
            can_update_own_metadata=False,
            agent=agent or None,
        )
        token = api.AccessToken(self.settings.api_key, self._secret).with_identity(identity)
        token = token.with_grants(grants).with_ttl(timedelta(seconds=self.settings.token_ttl_s))
        return token.with_kind("agent" if agent else "standard").to_jwt()

    async def token(self, request: web.Request) -> web.Response:
        voice = None
        if request.can_read_body:
            try:
                body = await request.json()
            except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, too deep
                return _error(400, 'the body must be JSON, e.g. {} or {"voice": "piper-en_US-joe-medium"}')
            voice = body.get("voice") if isinstance(body, dict) else None
            if voice is not None and (not isinstance(voice, str) or not 0 < len(voice) <= MAX_VOICE_CHARS):
                return _error(400, f'"voice" must be a model id of at most {MAX_VOICE_CHARS} characters')
        if len(self.channels) >= self.settings.max_rooms:
            log.warning("token refused: %d rooms open", len(self.channels))
            return _error(
                503, f"the appliance is serving its maximum of {self.settings.max_rooms} LiveKit rooms"
            )
        s = self.settings
        room_name = f"{s.room_prefix}{uuid.uuid4().hex[:12]}"
        person = f"person-{uuid.uuid4().hex[:8]}"
        room = rtc.Room()
        channel = LiveKitChannel(room, room_name, person, max_lead_ms=self.max_lead_ms, voice=voice)
        self.channels.add(channel)
        try:
            await room.connect(s.url, self.mint(room_name, s.agent_name, agent=True))
            await channel.publish()
        except Exception as exc:  # noqa: BLE001 — the SDK raises ConnectError and FFI errors alike
            log.warning("cannot join LiveKit room %s at %s: %s", room_name, s.url, exc)
            self.channels.discard(channel)
            await channel.close()
            return _error(502, f"livekit-server at {s.url} did not let the agent join: {exc}")
        log.info("room %s open for %s (%d rooms)", room_name, person, len(self.channels))
        _spawn(self._tasks, self._run(channel))
        return web.json_response(
            {
                "url": s.public_url or s.url,
                "token": self.mint(room_name, person),
                "room": room_name,
                "identity": person,
            }
        )

    async def _run(self, channel: LiveKitChannel) -> None:
        try:
            mic = asyncio.ensure_future(channel.microphone.wait())
            gone = asyncio.ensure_future(channel.finished.wait())
            await asyncio.wait(
                {mic, gone}, timeout=self.settings.join_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in (mic, gone):
                waiter.cancel()
            if channel.microphone.is_set() and not channel.closed:
                await self.converse(channel)
            elif not channel.closed:
                log.warning(
                    "%s published no microphone in %.0f s", channel.peer, self.settings.join_timeout_s
                )
        except Exception:
            log.exception("LiveKit session failed %s", channel.peer)
        finally:
            await channel.close()
            self.channels.discard(channel)
            log.info("room released %s (%d rooms)", channel.peer, len(self.channels))

    async def close(self) -> None:
        """Leave every room and wait for their sessions to end (cancelled after ``CLOSE_WAIT_S``)."""
        await asyncio.gather(
            *(c.close(1001, "server shutting down") for c in list(self.channels)), return_exceptions=True
        )
        tasks = list(self._tasks)
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        if late:
            log.warning("%d LiveKit sessions still ending after %.0f s: cancelled", len(late), CLOSE_WAIT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _spawn(tasks: set[asyncio.Task], coro) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
