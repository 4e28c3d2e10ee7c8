"""`appliance run`: the embedded default — one Piper worker (a child process) and the
orchestrator on this machine; no Redis, no root."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess

from appliance.config import OrchestratorSettings, load_settings
from appliance.interop.openai_api import OpenAiApi
from appliance.orchestrator.access.addresses import is_loopback
from appliance.orchestrator.server import Orchestrator
from appliance.process import free_port, terminate, wait_for_signal, worker_command
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)


async def run_embedded(
    port: int = 8080,
    host: str = "127.0.0.1",
    worker_config: str | None = None,
    livekit_url: str | None = None,
) -> None:
    worker_port = free_port()
    cmd = worker_command(worker_port, name="embedded")
    if worker_config:
        cmd += ["--config", worker_config]
    worker = subprocess.Popen(cmd, env={**os.environ})  # noqa: ASYNC220 -- a fork and exec, no wait
    try:
        async with TTSClient(f"127.0.0.1:{worker_port}") as client:
            await client.wait_ready(180)
        settings = load_settings(
            OrchestratorSettings,
            None,
            host=host,
            port=port,
            workers=[f"127.0.0.1:{worker_port}"],
            livekit={"enabled": True, "url": livekit_url} if livekit_url else None,
        )
        settings, note = choose_responder(settings)
        orchestrator = Orchestrator(settings, responder_note=note)
        OpenAiApi.mount(orchestrator)
        await orchestrator.start()
        log.info("responder: %s", orchestrator.responder_description())
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
        print(
            f"\n  appliance is running: http://{shown}:{orchestrator.port}/   (WebSocket: ws://{shown}:{orchestrator.port}/ws)\n"
            f"  talk to it: appliance chat --wav question.wav --url ws://{shown}:{orchestrator.port}/ws\n",
            flush=True,
        )
        if not orchestrator.access.off and not is_loopback(host):
            print(
                f"  other devices need the access secret: pair them at http://<this host>:{orchestrator.port}/trust\n"
                f"  (`appliance access show` prints it; docs/access.md)\n",
                flush=True,
            )
        await wait_for_signal()
        await orchestrator.stop()
    finally:
        terminate(worker)


def choose_responder(settings: OrchestratorSettings) -> tuple[OrchestratorSettings, str | None]:
    """The embedded LLM when its model is installed and no responder was asked for; else the echo
    responder, with a note saying why (shown in the log, on the page and in /healthz)."""
    from appliance.orchestrator.respond.llm_files import DEFAULT_LLM, fetch_command, installed

    if "kind" in settings.responder.model_fields_set:
        return settings, None
    model = settings.responder.model if settings.responder.model not in ("", "local") else DEFAULT_LLM
    if importlib.util.find_spec("xllamacpp") is None:
        note = "llama.cpp (the xllamacpp wheel) is not installed; `pip install xllamacpp` adds it"
        log.warning("answering with the echo responder: %s", note)
        return settings, note
    if installed(model, settings.responder.models_dir) is None:
        note = f"no LLM installed; `{fetch_command(model)}` installs one"
        log.warning("answering with the echo responder: %s", note)
        return settings, note
    responder = settings.responder.model_copy(update={"kind": "embedded"})
    return settings.model_copy(update={"responder": responder}), None
