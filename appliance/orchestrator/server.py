"""The orchestrator's HTTP side (aiohttp): the page at /, the WebSocket at /ws, WebRTC signalling at
/webrtc/offer, LiveKit room tokens at /livekit/token (only with [livekit] enabled), /healthz, /metrics,
and /trust (pairing); the access gate guards all but /healthz."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.asr import whisper_from_settings
from appliance.asr.turn_model import TurnModel, load_turn_model
from appliance.config import ConfigError, OrchestratorSettings
from appliance.discovery import redact
from appliance.orchestrator.access.gate import AccessGate, Refusal
from appliance.orchestrator.access.trust_page import TrustPage
from appliance.orchestrator.metrics import OrchestratorMetrics
from appliance.orchestrator.respond import create_responder
from appliance.orchestrator.session import Conversation
from appliance.orchestrator.workers import TtsLink, TtsUnavailable, WorkerPool, make_pool
from appliance.process import serve_until_signalled
from appliance.runtime_metrics import add_runtime_gauges
from appliance.systemd import Notifier, Watchdog, watchdog_interval
from appliance.transport.protocol import CloseCode
from appliance.transport.webrtc import WebRtcEndpoint
from appliance.transport.websocket import WebSocketChannel

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class Orchestrator:
    def __init__(self, settings: OrchestratorSettings, asr=None, responder_note: str | None = None) -> None:
        self.settings = settings
        self.responder_note = responder_note  # why this responder (e.g. the echo fallback's reason)
        self.asr = asr or whisper_from_settings(settings.asr)
        self.metrics = OrchestratorMetrics()
        self.access = AccessGate(settings)  # who may come in (docs/access.md)
        self.pool: WorkerPool = make_pool(settings, self.metrics.registry)  # Redis-routed, or the static list
        self.conversations: dict[str, Conversation] = {}
        self.turn_model: TurnModel | None = None  # loaded at start in smart mode
        self.webrtc = WebRtcEndpoint(
            lambda channel: self.converse(channel, "webrtc"),
            ice_servers=settings.webrtc.ice_servers,
            max_peers=settings.webrtc.max_peers,
            max_lead_ms=settings.playback.lead_ms,
        )
        self.livekit = None  # LiveKitEndpoint with [livekit] enabled: the SDK is imported only then
        if settings.livekit.enabled:
            from appliance.transport.livekit import LiveKitEndpoint

            self.livekit = LiveKitEndpoint(
                lambda channel: self.converse(channel, "livekit"),
                settings.livekit,
                max_lead_ms=settings.playback.lead_ms,
            )
        self.llm = None  # the embedded responder's loaded model, shared by every session
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.notifier = Notifier()  # Type=notify: READY=1 once serving, WATCHDOG=1 while the loop turns
        self._watchdog: asyncio.Task | None = None
        self.mounts: list[
            Callable[[web.Application], None]
        ] = []  # more routes, e.g. the /v1 API (appliance.interop)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_post("/webrtc/offer", self.webrtc_offer)
        if self.livekit is not None:
            app.router.add_post("/livekit/token", self.guarded(self.livekit.token))
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.guarded(self.prometheus))
        app.router.add_get("/workers", self.guarded(self.workers))
        TrustPage(self.access, WEB_DIR).register(app)
        if WEB_DIR.is_dir():
            app.router.add_static("/static/", WEB_DIR, show_index=False)
        for mount in self.mounts:
            mount(app)
        return app

    async def start(self) -> None:
        s = self.settings
        add_runtime_gauges(self.metrics.registry, asyncio.get_running_loop())
        if s.responder.kind == "embedded":
            await self._load_llm()  # first: a missing model fails the start before anything else loads
        await self.pool.start()
        log.info("loading ASR model %s", s.asr.model)
        await self.asr.load_async()
        if s.turn.mode == "smart":
            t = s.turn
            self.turn_model = await asyncio.to_thread(
                load_turn_model, t.model_path, s.asr.models_dir, t.threads
            )
        self.access.announce()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
        workers = ", ".join(s.workers)
        if s.redis_url:
            listed = s.listed_workers()
            workers = f"discovered in Redis at {redact(s.redis_url)}"
            workers += f" and listed: {', '.join(listed)}" if listed else ""
        log.info("orchestrator listening on http://%s:%d (workers: %s)", s.host, self.port, workers)
        self.notifier.ready(self._status_line())
        dog = Watchdog(self.notifier, interval=watchdog_interval(default=10.0), status=self._status_line)
        self._watchdog = asyncio.create_task(dog.run(), name="watchdog")

    async def _load_llm(self) -> None:
        from appliance.orchestrator.respond.embedded import engine_for
        from appliance.orchestrator.respond.llama import ModelLoadError
        from appliance.orchestrator.respond.llm_files import LlmNotInstalled

        try:
            self.llm = engine_for(self.settings.responder)
            log.info("loading LLM %s", self.llm.settings.model_path)
            await self.llm.load_async()
        except (LlmNotInstalled, ModelLoadError, ValueError) as exc:
            raise ConfigError(f'[responder] kind = "embedded": {exc}') from None
        except ImportError as exc:  # the wheel missing, or a library it links against (libgomp1)
            raise ConfigError(
                f'[responder] kind = "embedded" needs llama.cpp (pip install xllamacpp; '
                f"on Debian also apt install libgomp1): {exc}"
            ) from None

    def responder_description(self) -> str:
        """What answers: "echo", "openai <model>", "embedded <file>" (the page and /healthz show it)."""
        r = self.settings.responder
        if r.kind == "embedded" and self.llm is not None:
            return f"embedded {self.llm.name}"
        if r.kind == "openai":
            return f"openai {r.model}"
        return r.kind + (f" ({self.responder_note})" if self.responder_note else "")

    def _status_line(self) -> str:
        return f"serving on {self.settings.host}:{self.port}, {len(self.conversations)} sessions"

    async def stop(self) -> None:
        self.notifier.stopping()
        if self._watchdog:
            self._watchdog.cancel()
        for conv in list(self.conversations.values()):
            await conv.channel.close(1001, "server shutting down")
        await self.webrtc.close()
        if self.livekit is not None:
            await self.livekit.close()
        if self._runner:
            await self._runner.cleanup()
        await self.pool.close()
        self.asr.close()
        if self.llm is not None:
            self.llm.close()
        if self.turn_model:
            self.turn_model.close()

    async def serve_forever(self) -> None:
        await serve_until_signalled(self.start, self.stop)

    # --- handlers ----------------------------------------------------------------------------

    def guarded(self, handler):
        """The handler, behind the access gate (a JSON refusal: 401, 403 or 429)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = self.access.check(request)
            if refusal is not None:
                return self._refused(refusal)
            return await handler(request)

        return guarded

    def _refused(self, refusal: Refusal) -> web.Response:
        self.metrics.access_refused.labels(refusal.code).inc()
        return refusal.response()

    async def index(self, request: web.Request) -> web.StreamResponse:
        if self.access.required(request) and not self.access.has_cookie(request):
            return web.Response(status=303, headers={"Location": "/trust"})  # pair first
        page = WEB_DIR / "index.html"
        if page.exists():
            return web.FileResponse(page)
        return web.Response(text="appliance orchestrator: connect a client to /ws", content_type="text/plain")

    async def healthz(self, request: web.Request) -> web.Response:
        if self.access.check(request) is not None:  # for monitoring: alive, and nothing more
            return web.json_response({"status": "ok"})
        return web.json_response(
            {
                "status": "ok",
                "asr": self.settings.asr.model,
                "sessions": len(self.conversations),
                "workers": [w["address"] for w in self.pool.view()["workers"]],
                "responder": self.responder_description(),
                "livekit": self.settings.livekit.enabled,
            }
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def workers(self, request: web.Request) -> web.Response:
        """The worker registry as routing sees it (what `appliance workers` prints)."""
        return web.json_response(self.pool.view())

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        gate = self.access
        needed = gate.required(request) and not gate.has_cookie(request)
        refusal = gate.origin_refusal(request) or gate.lockout(request)
        if refusal is None and gate.required(request):
            refusal = gate.session_start(request)
        if refusal is not None:
            self.metrics.access_refused.labels(refusal.code).inc()
            return await WebSocketChannel.refuse(request, refusal.close_code, refusal.code, refusal.message)
        channel = await WebSocketChannel.accept(request)
        if channel.hello is None:
            return channel.ws
        if needed and not gate.secret_matches(channel.hello.token):
            refusal = gate.denied(request, presented=channel.hello.token is not None)
            self.metrics.access_refused.labels(refusal.code).inc()
            await channel.send_error(refusal.code, refusal.message)
            await channel.close(refusal.close_code, refusal.message)
            return channel.ws
        await self.converse(channel, "websocket")
        return channel.ws

    async def webrtc_offer(self, request: web.Request) -> web.StreamResponse:
        """The offer's JSON may carry the secret as ``"token"`` (the page relies on its cookie)."""
        try:
            body = await request.json()  # aiohttp keeps the body: the endpoint reads it again
        except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, too deep
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        refusal = self.access.check(request, token if isinstance(token, str) else None)
        if refusal is None and self.access.required(request):
            refusal = self.access.session_start(request)
        if refusal is not None:
            return self._refused(refusal)
        return await self.webrtc.offer(request)

    async def converse(self, channel, transport: str) -> None:
        """Join an accepted channel to a new session until either side ends it."""
        sid = uuid.uuid4().hex[:12]
        s = self.settings
        if len(self.conversations) >= s.session.max_sessions:
            await channel.send_error(
                "busy", f"the appliance is serving its maximum of {s.session.max_sessions} sessions"
            )
            await channel.close(CloseCode.BUSY, "too many sessions")
            return
        tts = TtsLink(
            self.pool,
            sid,
            channel.hello.voice or s.playback.tts_model,
            stall_s=s.playback.tts_stall_ms / 1000,
            retry_s=s.playback.tts_retry_s,
            metrics=self.metrics,
        )
        try:
            await tts.open()
        except TtsUnavailable as exc:
            log.error("session=%s %s", sid, exc)
            self.metrics.errors.labels("tts_unavailable").inc()
            await channel.send_error("tts_unavailable", str(exc))
            await channel.close(CloseCode.UNAVAILABLE, "no TTS worker available")
            return
        responder = create_responder(**s.responder.model_dump(), engine=self.llm)
        conv = Conversation(
            sid,
            channel,
            s,
            asr=self.asr,
            responder=responder,
            tts=tts,
            metrics=self.metrics,
            responder_description=self.responder_description(),
            turn_model=self.turn_model,
        )
        self.conversations[sid] = conv
        self.metrics.sessions.labels(transport).inc()
        self.metrics.sessions_total.labels(transport).inc()
        log.info(
            "session started session=%s transport=%s peer=%s rate=%d",
            sid,
            transport,
            channel.peer,
            channel.hello.sample_rate,
        )
        try:
            await conv.run()
        finally:
            self.conversations.pop(sid, None)
            self.metrics.sessions.labels(transport).dec()
            await responder.close()
            log.info("session ended session=%s turns=%d", sid, conv.turns)
