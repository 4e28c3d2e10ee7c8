"""A one-worker appliance whose worker dies mid-reply ([playback] tts_retry_s), with real parts:
one real worker process (the mock engine, slowed so a reply streams for seconds), the real
orchestrator process with it as its only static worker, a real WebSocket client. The worker is
SIGKILLed mid-reply and, like systemd's Restart=on-failure would, started again on the same port
(or not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import urllib.request

import pytest
from services import MockWorkerProcess, OrchestratorProcess

from appliance.transport.ws_client import WsClient
from appliance.tts.client import TTSClient

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
TEXT = " ".join(f"{WORDS[i % 8].capitalize()} {WORDS[(i + 3) % 8]} {WORDS[(i + 5) % 8]}." for i in range(16))
DOWN_S = 1.0  # how long the worker stays dead before it is started again
_FAILOVER = re.compile(
    r"tts failover session=(\S+) worker=(\S+) cause=(\w+) .* to=(\S+) resend_from=(\d+)/(\d+)"
)


def _get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Appliance:
    """One mock worker and the orchestrator with it as its only worker."""

    def __init__(self, retry_s: float | None) -> None:
        self.worker = MockWorkerProcess()
        self.workers = [self.worker]
        env = {} if retry_s is None else {"APPLIANCE_PLAYBACK__TTS_RETRY_S": str(retry_s)}
        self.worker.wait_ready()
        self.orch = OrchestratorProcess([self.worker.address], env=env)
        self.orch.wait_ready()

    def kill_worker(self) -> None:
        os.kill(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait()

    def restart_worker(self) -> MockWorkerProcess:
        self.worker = MockWorkerProcess(port=self.worker.port)
        self.workers.append(self.worker)
        return self.worker

    def close(self) -> None:
        self.orch.stop()
        for w in self.workers:
            w.stop()


@contextlib.asynccontextmanager
async def _appliance(retry_s: float | None):
    app = await asyncio.to_thread(Appliance, retry_s)
    client = WsClient(app.orch.url)
    try:
        await client.connect(16000)
        yield app, client
    finally:
        await client.close()
        await asyncio.to_thread(app.close)


def _states(client: WsClient) -> list[str]:
    return [e["state"] for e in client.rx.of_type("state")]


async def _say_and_kill(app: Appliance, client: WsClient) -> float:
    """Start a long reply and SIGKILL the worker once a second of it has arrived; returns when."""
    await client.send_json({"type": "say", "text": TEXT})
    await client.wait_for(lambda: len(client.rx.frames) >= 50, 30)
    app.kill_worker()
    return asyncio.get_running_loop().time()


async def _log_line(app: Appliance, pattern: str, timeout: float) -> re.Match:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (m := re.search(pattern, app.orch.log())) is None:
        assert loop.time() < deadline, f"no log line {pattern!r} in:\n{app.orch.log()[-3000:]}"
        await asyncio.sleep(0.05)
    return m


async def test_the_reply_resumes_when_its_only_worker_is_restarted():
    async with _appliance(retry_s=10) as (app, client):
        sid = client.ready["session_id"]
        await _say_and_kill(app, client)
        await asyncio.sleep(DOWN_S)  # systemd's RestartSec, roughly
        restarted = app.restart_worker()
        await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
        await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)
        assert client.rx.of_type("error") == []

        log = app.orch.log()
        [(session, worker, cause, to, resend, total)] = _FAILOVER.findall(log)
        assert (session, worker, cause, to) == (sid, restarted.address, "lost", restarted.address)
        resend, total = int(resend), int(total)
        assert total == len(TEXT) and 0 < resend < len(TEXT) and TEXT[resend - 1] == "."
        assert re.search(rf"tts worker wait session={sid}: no worker available", log)
        waited = re.search(rf"tts worker wait session={sid}: recovered after (\d+) ms", log)
        assert waited and DOWN_S * 1000 <= int(waited.group(1)) < 10_000

        # After the gap, the client got exactly the restarted worker's audio of the text from the
        # voiced offset on: the rest of the reply, nothing lost, nothing twice.
        async with TTSClient(restarted.address) as ref:
            await ref.start_session("ref")
            _, frames = await ref.synthesize_all("ref", TEXT[resend:])
        rest = [f.audio_data for f in frames if f.audio_data]
        received = client.rx.frames
        assert len(received) > len(rest)
        assert [f for _, f in received[-len(rest) :]] == rest
        gap = received[-len(rest)][0] - received[-len(rest) - 1][0]
        assert gap >= 0.5  # the frames before it came from the worker that was killed

        page = await asyncio.to_thread(_get, app.orch.http + "/metrics")
        assert _metric(page, "appliance_tts_failovers_total", worker=restarted.address, cause="lost") == 1
        assert _metric(page, "appliance_tts_failover_gap_seconds_count") == 1
        assert _metric(page, "appliance_tts_worker_wait_seconds_count", outcome="recovered") == 1


async def test_with_no_worker_back_the_reply_ends_with_an_error_after_the_retry_bound():
    async with _appliance(retry_s=None) as (app, client):  # the shipped default, 5 s
        sid = client.ready["session_id"]
        killed_at = await _say_and_kill(app, client)
        await client.wait_for(lambda: client.rx.of_type("error"), 30)
        error_at = next(t for t, e in client.rx.events if e["type"] == "error")
        assert client.rx.of_type("error")[0]["code"] == "tts_unavailable"
        assert 5.0 <= error_at - killed_at < 20
        await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)
        assert "SPEAKING" in _states(client) and client.rx.of_type("reply_end")
        await _log_line(app, rf"tts worker wait session={sid}: gave up after \d+ ms", 5)

        # Once the worker is back, the session's next reply is spoken (how long a restart takes
        # depends on the machine, so the test waits for it rather than racing the 5 s bound).
        restarted = app.restart_worker()
        await asyncio.to_thread(restarted.wait_ready)
        n = len(client.rx.of_type("reply_end"))
        await client.send_json({"type": "say", "text": "Back to normal."})
        await client.wait_for(lambda: len(client.rx.of_type("reply_end")) > n, 30)
        assert len(client.rx.of_type("error")) == 1
        await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)


@pytest.mark.parametrize("how", ["interrupt", "disconnect"])
async def test_an_interrupt_or_a_disconnect_ends_the_wait_at_once(how):
    async with _appliance(retry_s=30) as (app, client):
        sid = client.ready["session_id"]
        await _say_and_kill(app, client)
        await _log_line(app, rf"tts worker wait session={sid}: no worker available", 10)
        if how == "interrupt":
            await client.send_json({"type": "interrupt"})
            await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 5)
        else:
            await client.close()
        # Well inside the 30 s bound: the wait was cancelled, not timed out.
        await _log_line(app, rf"tts worker wait session={sid}: cancelled after \d+ ms", 5)
        page = await asyncio.to_thread(_get, app.orch.http + "/metrics")
        assert _metric(page, "appliance_tts_worker_wait_seconds_count", outcome="cancelled") == 1
        assert _metric(page, "appliance_tts_worker_wait_seconds_count", outcome="gave_up") == 0

        if how == "disconnect":  # the session is gone, its turn and wait with it
            for _ in range(100):
                if json.loads(await asyncio.to_thread(_get, app.orch.http + "/healthz"))["sessions"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(await asyncio.to_thread(_get, app.orch.http + "/healthz"))["sessions"] == 0
            return
        assert client.rx.of_type("error") == []
        # The session goes on: once the worker is back, the next reply is spoken.
        app.restart_worker()
        n = len(client.rx.of_type("reply_end"))
        await client.send_json({"type": "say", "text": "Back to normal."})
        await client.wait_for(lambda: len(client.rx.of_type("reply_end")) > n, 30)
        assert client.rx.of_type("error") == []
