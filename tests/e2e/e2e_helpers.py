"""Helpers for the e2e tests: the real orchestrator and Piper worker behind a real Caddy (tls internal), driven by
Debian's Chromium through Playwright with a fake microphone playing a speech WAV."""

from __future__ import annotations

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
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]



class CaddyProcess:
    """Debian's Caddy with the shipped Caddyfile template, on free ports, with its own data dir."""

    def __init__(self, upstream: str, data_dir: Path) -> None:
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
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["caddy", "run", "--config", str(ROOT / "etc/appliance/Caddyfile"), "--adapter", "caddyfile"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
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
async def chromium(profile: Path, mic_wav: Path | None = None):
    """A fresh persistent Chromium profile with a fake microphone (the WAV, played once)."""
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}%noloop")
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=False, args=args, ignore_https_errors=True,
        )
        try:
            yield context
        finally:
            await context.close()


def save_screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
