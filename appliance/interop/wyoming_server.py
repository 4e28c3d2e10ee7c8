"""`appliance wyoming`: the Wyoming protocol server Home Assistant's integration talks to.

It reads the orchestrator's configuration and serves with the same parts: the worker pool (the
static list, or Redis discovery with routing and failover) for TTS, and the same Whisper model for
ASR. ``describe`` lists the voices the workers offer now. Under systemd it says READY=1 once the
ASR model is loaded and it listens, and WATCHDOG=1 while its loop turns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from functools import partial
from importlib.metadata import version

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncServer, AsyncTcpServer

from appliance.asr import whisper_from_settings
from appliance.config import OrchestratorSettings
from appliance.interop.voices import VoiceCatalog
from appliance.interop.wyoming_handler import WyomingHandler
from appliance.orchestrator.workers import WorkerPool, make_pool
from appliance.process import serve_until_signalled
from appliance.systemd import Notifier, Watchdog, watchdog_interval

log = logging.getLogger(__name__)

__version__ = version("appliance")

STOP_WAIT_S = 5.0  # how long a stop waits for syntheses in flight to end their worker sessions

APPLIANCE = Attribution(name="appliance", url="")
WHISPER = Attribution(name="OpenAI Whisper (faster-whisper)", url="https://github.com/SYSTRAN/faster-whisper")


class WyomingService:
    def __init__(self, settings: OrchestratorSettings, *, pool: WorkerPool | None = None, asr=None) -> None:
        self.settings = settings
        self.pool = pool or make_pool(settings)
        self.asr = asr or whisper_from_settings(settings.asr)
        self.catalog = VoiceCatalog(self.pool)
        self.max_clients = settings.wyoming.max_clients
        access = settings.access
        self.allowed = (
            None
            if access.enabled is False
            else [ipaddress.ip_network(n, strict=False) for n in access.wyoming_allow]
        )
        self.clients: set[WyomingHandler] = set()
        self.speaking: set[asyncio.Task] = set()  # handlers inside a one-shot synthesis
        self.server: AsyncServer | None = None
        self.port: int | None = None
        self.advertiser = None
        self.notifier = Notifier()
        self._watchdog: asyncio.Task | None = None

    def allows(self, peer) -> bool:
        """``[access] wyoming_allow``: the protocol has no authentication, so the client's address decides."""
        if self.allowed is None or not isinstance(peer, tuple) or not peer:  # off, or a unix socket
            return True
        try:
            ip = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.settings.access.enabled == "auto" and ip.is_loopback:
            return True
        if not any(ip in net for net in self.allowed):
            log.warning("wyoming client %s refused: not in [access] wyoming_allow", peer[0])
            return False
        return True

    def admit(self, handler: WyomingHandler) -> bool:
        if len(self.clients) >= self.max_clients:
            return False
        self.clients.add(handler)
        return True

    def leave(self, handler: WyomingHandler) -> None:
        self.clients.discard(handler)

    async def start(self) -> None:
        w = self.settings.wyoming
        await self.pool.start()
        log.info("loading ASR model %s", self.settings.asr.model)
        await self.asr.load_async()
        self.server = AsyncServer.from_uri(w.uri)
        await self.server.start(partial(WyomingHandler, self))
        if isinstance(self.server, AsyncTcpServer):
            self.port = self.server._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
        log.info("wyoming listening on %s (port %s)", w.uri, self.port)
        if self.allowed is None:
            log.warning("wyoming: access control is off ([access] enabled = false): any client is served")
        else:
            log.info("wyoming: serving clients from %s only", ", ".join(self.settings.access.wyoming_allow))
        if w.zeroconf and self.port is not None:
            from appliance.interop.zeroconf import Advertiser

            self.advertiser = Advertiser(self.port, name=w.zeroconf_name, host=w.zeroconf_host)
            await self.advertiser.start()
        self.notifier.ready(self._status_line())
        dog = Watchdog(self.notifier, interval=watchdog_interval(default=10.0), status=self._status_line)
        self._watchdog = asyncio.create_task(dog.run(), name="watchdog")

    def _status_line(self) -> str:
        return f"wyoming on {self.settings.wyoming.uri}, {len(self.clients)} clients"

    async def stop(self) -> None:
        self.notifier.stopping()
        if self._watchdog:
            self._watchdog.cancel()
        if self.advertiser is not None:
            await self.advertiser.stop()
        if self.server is not None:
            await self.server.stop()
        await asyncio.sleep(0)  # the handlers' tasks run their disconnect (worker sessions end)
        for handler in list(self.clients):
            await handler.disconnect()
        # A synthesis still being sent (or ending) must end its worker session before the pool's
        # channels close under it, or the worker holds that session until it is reaped.
        for task in self.speaking:
            task.cancel()
        if self.speaking:
            await asyncio.wait(self.speaking, timeout=STOP_WAIT_S)
        await self.catalog.close()
        await self.pool.close()
        await self.asr.aclose()

    async def serve_forever(self) -> None:
        await serve_until_signalled(self.start, self.stop)

    async def info(self) -> Info:
        voices = [
            TtsVoice(
                name=v.name,
                description=f"{v.engine} voice {v.name} ({v.native_rate} Hz)",
                attribution=Attribution(*v.attribution),
                installed=True,
                version=None,
                languages=[v.language.replace("-", "_")],
            )
            for v in await self.catalog.voices()
        ]
        tts = TtsProgram(
            name="appliance-tts",
            description="the appliance's TTS workers",
            attribution=APPLIANCE,
            installed=True,
            version=__version__,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        model = AsrModel(
            name=self.asr.name,
            description=f"{self.asr.name} on {self.asr.device or 'auto'}",
            attribution=WHISPER,
            installed=True,
            version=None,
            languages=self._asr_languages(),
        )
        asr = AsrProgram(
            name="appliance-asr",
            description="the appliance's speech recognition",
            attribution=APPLIANCE,
            installed=True,
            version=__version__,
            models=[model],
            supports_transcript_streaming=True,
        )
        return Info(asr=[asr], tts=[tts])

    def _asr_languages(self) -> list[str]:
        if getattr(self.asr, "requested_language", None) == "auto":  # detected per request
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            return sorted(_LANGUAGE_CODES)
        return [self.asr.language]
