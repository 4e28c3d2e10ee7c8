"""Helpers for the e2e tests: the real orchestrator and Piper worker behind a real Caddy (tls internal), driven by
Debian's Chromium through Playwright with a fake microphone: a speech WAV played once from the start, or a
fed microphone that stays silent until the test gives it speech."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

from appliance.process import free_port, terminate

ROOT = Path(__file__).resolve().parents[2]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / ".artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

# Chromium's fake capture plays its WAV on a fixed timeline from the moment the microphone opens, so a
# test cannot make speech wait for something on the page. This one replaces getUserMedia (in the test's
# browser only) with a WebAudio track that is silent until `window.fedMic.play(base64 PCM16LE, rate)`;
# the page captures and sends it exactly as it would a real microphone. play() resolves, once the
# speech has been played, with the performance.now() at which it started.
FED_MIC_SCRIPT = """
(() => {
  if (!navigator.mediaDevices) return;
  const ctx = new AudioContext({ sampleRate: 48000 });
  const out = ctx.createMediaStreamDestination();
  out.channelCount = 1;
  // Without a source playing, the track delivers no audio at all, and WebRTC then sends nothing
  // (the server would never hear the silence that ends a turn): a zero source keeps it flowing.
  const zero = ctx.createConstantSource();
  zero.offset.value = 0;
  zero.connect(out);
  zero.start();
  let queuedUntil = 0;
  window.fedMic = {
    play(b64, rate) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const pcm = new Int16Array(bytes.buffer);
      const buf = ctx.createBuffer(1, pcm.length, rate);
      const ch = buf.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(out);
      const at = Math.max(ctx.currentTime, queuedUntil);
      queuedUntil = at + buf.duration;
      const startsAt = performance.now() + (at - ctx.currentTime) * 1000;
      src.start(at);
      return new Promise((resolve) => { src.onended = () => resolve(startsAt); });
    },
  };
  navigator.mediaDevices.getUserMedia = async () => {
    await ctx.resume();
    return new MediaStream(out.stream.getAudioTracks().map((t) => t.clone()));
  };
})();
"""


class CaddyProcess:
    """Debian's Caddy with the shipped Caddyfile template, on free ports, with its own data dir."""

    def __init__(self, upstream: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.https_port = free_port()
        self.http_port = free_port()
        self.url = f"https://localhost:{self.https_port}"
        self.log_path = data_dir / "caddy.log"
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(data_dir / "data"),
            "XDG_CONFIG_HOME": str(data_dir / "config"),
            "APPLIANCE_HOST": "localhost",
            "APPLIANCE_TLS": "internal",
            "APPLIANCE_UPSTREAM": upstream,
            "APPLIANCE_HTTPS_PORT": str(self.https_port),
            "APPLIANCE_HTTP_PORT": str(self.http_port),
            "APPLIANCE_CA_DIR": str(data_dir / "data" / "caddy" / "pki" / "authorities" / "local"),
            **(env or {}),
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["caddy", "run", "--config", str(ROOT / "etc/appliance/Caddyfile"), "--adapter", "caddyfile"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes, dict]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(self.url + path, context=ctx, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("caddy exited:\n" + self.log_path.read_text(errors="replace"))
            try:
                self.get("/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("caddy not ready:\n" + self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


@asynccontextmanager
async def chromium(profile: Path, mic_wav: Path | None = None, fed_mic: bool = False):
    """A fresh persistent Chromium profile with a fake microphone: the WAV, played once, or with
    ``fed_mic`` the microphone that `feed_mic` gives speech to."""
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}%noloop")
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=False,
            args=args,
            ignore_https_errors=True,
        )
        if fed_mic:
            await context.add_init_script(FED_MIC_SCRIPT)
        try:
            yield context
        finally:
            await context.close()


async def feed_mic(page, pcm16: bytes, rate: int) -> float:
    """Play speech (PCM16LE mono) into a fed microphone; returns once it has been played, with the
    page's performance.now() at which it started."""
    return await page.evaluate(
        "([b64, rate]) => window.fedMic.play(b64, rate)", [base64.b64encode(pcm16).decode(), rate]
    )


def save_screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
