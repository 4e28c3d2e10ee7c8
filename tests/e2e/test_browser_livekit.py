"""The page's LiveKit transport in Debian's Chromium: the page asks the orchestrator for a room over
HTTPS through Caddy, joins it with livekit-client through Caddy's /livekit route to a real
livekit-server, and holds a spoken turn that is transcribed, answered and heard."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e_helpers import CaddyProcess, chromium
from livekit_server import GoMissing, livekit_server
from services import OrchestratorProcess
from speech import listen, wer
from test_browser import QUESTION, events, mic_file, open_page, recorded_audio, wait_event

from appliance.process import free_port
from appliance.transport.protocol import Ready

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "appliance/web/vendor/livekit-client.esm.mjs"
BUILD = ROOT / "scripts/build-web-livekit.sh"


@pytest.fixture(scope="module")
def livekit_page(piper_worker, tmp_path_factory):
    if not VENDOR.exists():  # `make test` puts it there; a bare pytest run does it here
        done = subprocess.run(["bash", str(BUILD)], check=False, capture_output=True, text=True, timeout=600)
        if "npm is not installed" in done.stderr:
            pytest.skip(done.stderr.strip())
        assert done.returncode == 0, f"building the page's LiveKit client failed:\n{done.stderr[-3000:]}"
    try:
        server = livekit_server()
    except GoMissing as exc:
        pytest.skip(str(exc))
    orch_port = free_port()
    proxy = CaddyProcess(
        f"127.0.0.1:{orch_port}",
        tmp_path_factory.mktemp("caddy-livekit"),
        env={"APPLIANCE_LIVEKIT_UPSTREAM": f"127.0.0.1:{server.port}"},
    )
    orch = OrchestratorProcess(
        [piper_worker.address],
        env={
            "APPLIANCE_LIVEKIT__ENABLED": "true",
            "APPLIANCE_LIVEKIT__URL": server.url,
            "APPLIANCE_LIVEKIT__PUBLIC_URL": f"wss://localhost:{proxy.https_port}/livekit",
            "APPLIANCE_LIVEKIT__API_KEY": server.api_key,
            "APPLIANCE_LIVEKIT__API_SECRET": server.api_secret,
        },
        port=orch_port,
    )
    proxy.secret = orch.secret  # through Caddy, clients need the orchestrator's access secret
    try:
        orch.wait_ready()
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()
        orch.stop()
        server.close()


async def test_a_spoken_turn_through_livekit_in_the_browser(livekit_page, tmp_path):
    mic = mic_file(tmp_path, (QUESTION, 6.0))
    async with chromium(tmp_path / "profile", mic) as context:
        page, errors = await open_page(context, livekit_page, "livekit")
        await page.click("[data-testid=start]")
        await wait_event(page, Ready.type, 45)
        notices = await page.evaluate("() => window.applianceTest.notices")
        assert await page.evaluate("() => window.applianceTest.transport") == "livekit", notices
        await wait_event(page, "reply_end", 90)
        transcript = await page.inner_text("[data-testid=transcript]")
        assert wer(QUESTION, transcript) <= 0.2, transcript
        await wait_event(page, "metrics", 10)
        audio = await recorded_audio(page)
        assert len(audio) > 48000 * 0.5, "no reply audio was played"
        spoken = " ".join(e["text"] for e in await events(page) if e.get("type") == "reply")
        heard = listen(audio, 48000, spoken)
        assert wer(spoken, heard) <= 0.35, (spoken, heard)
        assert errors == []
