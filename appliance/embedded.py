"""`appliance run`: the embedded default — one Piper worker (a child process) and the
orchestrator on this machine; no Redis, no root."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from appliance.config import OrchestratorSettings, load_settings
from appliance.interop.openai_api import OpenAiApi
from appliance.orchestrator.server import Orchestrator
from appliance.process import free_port, terminate, wait_for_signal
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)


async def run_embedded(port: int = 8080, host: str = "127.0.0.1", worker_config: str | None = None) -> None:
    worker_port = free_port()
    cmd = [sys.executable, "-m", "appliance", "tts-worker", "--host", "127.0.0.1", "--port", str(worker_port),
           "--name", "embedded", "--metrics-port", str(free_port())]
    if worker_config:
        cmd += ["--config", worker_config]
    worker = subprocess.Popen(cmd, env={**os.environ})
    try:
        async with TTSClient(f"127.0.0.1:{worker_port}") as client:
            await client.wait_ready(180)
        settings = load_settings(OrchestratorSettings, None, host=host, port=port, workers=[f"127.0.0.1:{worker_port}"])
        orchestrator = Orchestrator(settings)
        OpenAiApi.mount(orchestrator)
        await orchestrator.start()
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
        print(f"\n  appliance is running: http://{shown}:{orchestrator.port}/   (WebSocket: ws://{shown}:{orchestrator.port}/ws)\n"
              f"  talk to it: appliance chat --wav question.wav --url ws://{shown}:{orchestrator.port}/ws\n", flush=True)
        await wait_for_signal()
        await orchestrator.stop()
    finally:
        terminate(worker)
