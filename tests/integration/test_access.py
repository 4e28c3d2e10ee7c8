"""Access control for real: an orchestrator listening on every address, a real mock-engine worker,
and real clients (aiohttp's WebSocket client, the `openai` SDK, the `wyoming` client) connecting
through this machine's LAN address — beyond loopback — and through loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest
from services import WorkerProcess
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe

from appliance.config import OrchestratorSettings, load_settings
from appliance.interop.api_keys import hash_key, new_key
from appliance.interop.openai_api import OpenAiApi
from appliance.interop.wyoming_server import WyomingService
from appliance.orchestrator.access.addresses import lan_addresses
from appliance.orchestrator.access.gate import COOKIE_NAME
from appliance.orchestrator.server import Orchestrator
from appliance.transport.protocol import CloseCode

LAN = sorted(a for a in lan_addresses() if "." in a and not a.startswith("127."))
pytestmark = pytest.mark.skipif(not LAN, reason="this machine has no IPv4 address beyond loopback")
KEY = new_key()


class StubAsr:
    name, device, language = "stub", "cpu", "en"

    async def load_async(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def mock_worker(tmp_path_factory):
    config = tmp_path_factory.mktemp("worker") / "mock.toml"
    config.write_text('name = "mock"\n[models]\ndefault = "mock-sine"\nwarmup = false\n')
    worker = WorkerProcess(config=str(config))
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def appliance(mock_worker, tmp_path):
    """Start orchestrators on 0.0.0.0 (``access`` as [access] keys); each has ``secret`` and ``lan``."""
    started = []

    async def start(**access):
        settings = load_settings(
            OrchestratorSettings,
            None,
            host="0.0.0.0",
            port=0,
            workers=[mock_worker.address],
            access={"secret_file": str(tmp_path / f"secret{len(started)}"), **access},
            api={"keys_sha256": [hash_key(KEY)]},
        )
        orch = Orchestrator(settings, asr=StubAsr())
        OpenAiApi.mount(orch)
        await orch.start()
        started.append(orch)
        orch.lan = f"http://{LAN[0]}:{orch.port}"
        orch.loop_url = f"http://127.0.0.1:{orch.port}"
        orch.secret = orch.access.store.get(create=False) if access.get("enabled") is not False else None
        return orch

    yield start
    for orch in started:
        await orch.stop()


async def session(url: str, token: str | None = None, headers: dict | None = None, cookies=None):
    """Open /ws, say hello, and return (the first event, the close code) — or the ready event."""
    ws_url = url.replace("http", "ws") + "/ws"
    async with (
        aiohttp.ClientSession(cookies=cookies) as http,
        http.ws_connect(ws_url, headers=headers or {}) as ws,
    ):
        hello = {"type": "hello", "sample_rate": 16000, **({"token": token} if token else {})}
        await ws.send_str(json.dumps(hello))
        first = await asyncio.wait_for(ws.receive(), 30)
        if first.type == aiohttp.WSMsgType.TEXT and json.loads(first.data)["type"] == "ready":
            await ws.send_str(json.dumps({"type": "bye"}))
            return json.loads(first.data), None
        event = json.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else None
        while (await asyncio.wait_for(ws.receive(), 30)).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        ):
            pass
        return event, ws.close_code


async def test_loopback_stays_open_by_default(appliance):
    orch = await appliance()
    ready, _ = await session(orch.loop_url)
    assert ready["type"] == "ready"
    async with aiohttp.ClientSession() as http, http.get(orch.loop_url + "/", allow_redirects=False) as r:
        assert r.status == 200


async def test_every_endpoint_beyond_loopback_refuses_a_client_without_access(appliance):
    orch = await appliance()
    event, code = await session(orch.lan)
    assert code == CloseCode.ACCESS_DENIED and event["code"] == "access_required"
    event, code = await session(orch.lan, token="wrong-secret")
    assert code == CloseCode.ACCESS_DENIED and event["code"] == "access_denied"
    async with aiohttp.ClientSession() as http:
        async with http.get(orch.lan + "/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/trust"
        for path in ("/metrics", "/workers"):
            async with http.get(orch.lan + path) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "access_required"
        async with http.post(orch.lan + "/webrtc/offer", json={"sdp": "v=0", "type": "offer"}) as r:
            assert r.status == 401
        async with http.get(orch.lan + "/healthz") as r:
            assert await r.json() == {"status": "ok"}  # alive, and nothing more
        async with http.get(orch.lan + "/trust") as r:
            page = await r.text()
            assert r.status == 200 and 'data-testid="pair-form"' in page and orch.secret not in page
    no_key = openai.AsyncOpenAI(base_url=orch.lan + "/v1", api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await no_key.models.list()


async def test_a_paired_client_works_and_rotate_unpairs_it(appliance):
    orch = await appliance()
    ready, _ = await session(orch.lan, token=orch.secret)
    assert ready["type"] == "ready"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(
            orch.lan + "/trust/pair", data={"secret": orch.secret.upper()}, allow_redirects=False
        ) as r:
            assert r.status == 303
            cookie = r.cookies[COOKIE_NAME]
            assert (
                cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
            )  # plain http
        async with http.get(orch.lan + "/", allow_redirects=False) as r:
            assert r.status == 200
        async with http.get(orch.lan + "/trust") as r:
            page = await r.text()
            assert "<svg" in page and f"#secret={orch.secret}" in page  # the QR of the pairing link
        async with http.get(orch.lan + "/metrics") as r:
            assert r.status == 200
        ready, _ = await session(orch.lan, cookies={COOKIE_NAME: cookie.value})
        assert ready["type"] == "ready"
        for api_key in (KEY, orch.secret):  # a listed API key, and the access secret, as Bearer
            models = await openai.AsyncOpenAI(
                base_url=orch.lan + "/v1", api_key=api_key, max_retries=0
            ).models.list()
            assert "tts-1" in {m.id for m in models.data}

        new = orch.access.store.rotate()  # what `appliance access rotate` does
        async with http.get(orch.lan + "/", allow_redirects=False) as r:
            assert r.status == 303
        event, code = await session(orch.lan, cookies={COOKIE_NAME: cookie.value})
        assert code == CloseCode.ACCESS_DENIED
        event, code = await session(orch.lan, token=orch.secret)
        assert code == CloseCode.ACCESS_DENIED and event["code"] == "access_denied"
        ready, _ = await session(orch.lan, token=new)
        assert ready["type"] == "ready"


async def test_a_foreign_origin_is_refused(appliance):
    orch = await appliance()
    event, code = await session(orch.loop_url, headers={"Origin": "http://evil.example"})
    assert code == CloseCode.ORIGIN_REFUSED and event["code"] == "origin_refused"
    event, code = await session(orch.lan, token=orch.secret, headers={"Origin": "https://evil.example"})
    assert code == CloseCode.ORIGIN_REFUSED
    async with aiohttp.ClientSession() as http:
        offer = {"sdp": "v=0", "type": "offer", "token": orch.secret}
        async with http.post(
            orch.lan + "/webrtc/offer", json=offer, headers={"Origin": "http://evil.example"}
        ) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "origin_refused"
    ready, _ = await session(orch.lan, token=orch.secret, headers={"Origin": f"http://{LAN[0]}:{orch.port}"})
    assert ready["type"] == "ready"
    extra = await appliance(allowed_origins=["https://voice.example.org"])
    ready, _ = await session(extra.lan, token=extra.secret, headers={"Origin": "https://voice.example.org"})
    assert ready["type"] == "ready"


async def test_rate_limits_answer_429_and_4029_with_a_retry_hint(appliance):
    orch = await appliance(failed_attempts_per_minute=2, session_starts_per_minute=3)
    for _ in range(2):
        event, code = await session(orch.lan, token="wrong-secret")
        assert code == CloseCode.ACCESS_DENIED
    event, code = await session(orch.lan, token=orch.secret)  # even the right one, for now
    assert (
        code == CloseCode.RATE_LIMITED and event["code"] == "rate_limited" and "retry in" in event["message"]
    )
    pair = orch.lan + "/trust/pair"
    async with aiohttp.ClientSession() as http, http.post(pair, json={"secret": orch.secret}) as r:
        body = await r.json()
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0 and body["error"]["retry_after_s"] > 0
    ready, _ = await session(orch.loop_url)  # this machine itself is not limited
    assert ready["type"] == "ready"

    starts = await appliance(session_starts_per_minute=2)
    for _ in range(2):
        ready, _ = await session(starts.lan, token=starts.secret)
        assert ready["type"] == "ready"
    event, code = await session(starts.lan, token=starts.secret)
    assert code == CloseCode.RATE_LIMITED and "sessions started" in event["message"]


async def test_access_off_by_name_keeps_the_old_behaviour(appliance, caplog):
    orch = await appliance(enabled=False)
    assert "access control is OFF" in caplog.text
    ready, _ = await session(orch.lan, headers={"Origin": "http://anything.example"})
    assert ready["type"] == "ready"
    with pytest.raises(openai.AuthenticationError):  # the API still needs its keys
        await openai.AsyncOpenAI(base_url=orch.lan + "/v1", api_key="sk-nope", max_retries=0).models.list()


async def test_wyoming_serves_only_allowed_addresses(mock_worker, tmp_path):
    settings = load_settings(
        OrchestratorSettings,
        None,
        workers=[mock_worker.address],
        wyoming={"uri": "tcp://0.0.0.0:0"},
        access={"secret_file": str(tmp_path / "secret")},
    )
    service = WyomingService(settings, asr=StubAsr())
    await service.start()
    try:
        async with AsyncTcpClient(LAN[0], service.port) as client:  # not in the default allow-list
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event.type == "error" and event.data["code"] == "access_denied"
            assert await asyncio.wait_for(client.read_event(), 30) is None  # and closed
        async with AsyncTcpClient("127.0.0.1", service.port) as client:
            await client.write_event(Describe().event())
            assert (await asyncio.wait_for(client.read_event(), 30)).type == "info"
    finally:
        await service.stop()
    allowed = settings.access.model_copy(update={"wyoming_allow": [f"{LAN[0]}/32"]})
    service = WyomingService(settings.model_copy(update={"access": allowed}), asr=StubAsr())
    await service.start()
    try:
        async with AsyncTcpClient(LAN[0], service.port) as client:
            await client.write_event(Describe().event())
            assert (await asyncio.wait_for(client.read_event(), 30)).type == "info"
    finally:
        await service.stop()
