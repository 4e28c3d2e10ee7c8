"""Routing by what the engines declare, with two real workers in Redis: a Kokoro worker (Japanese)
and a Piper worker (English). A session asking for a Japanese voice is served by the Kokoro
worker and hears Japanese; an English one by Piper; the records say which languages each speaks."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from services import ROOT
from speech import cer, listen, transcribe_japanese, wer
from test_discovery_routing import open_session, say, served_by, start_worker, wait_workers

from appliance.tts.catalog import Catalog

JA = "kokoro-ja-jf_alpha"
EN = "piper-en_US-joe-medium"

if JA not in Catalog().ids():
    pytest.skip(f"Kokoro is not installed here: {Catalog().missing.get(JA)}", allow_module_level=True)


@pytest.fixture
def two_workers(redis_server, tmp_path):
    ja_config = tmp_path / "ja.toml"
    ja_config.write_text(  # it could also speak Piper's English: it says it is the Japanese one
        f'name = "ja"\n[models]\ndefault = "{JA}"\n[discovery]\nheartbeat_s = 1.0\nlanguages = ["ja-JP"]\n'
    )
    procs = [
        start_worker(redis_server, str(ja_config), "ja"),
        start_worker(redis_server, str(ROOT / "etc/appliance/tts/piper.toml"), "en"),
    ]
    yield procs
    for p in procs:
        p.stop()


async def test_a_japanese_voice_goes_to_kokoro_and_an_english_one_to_piper(
    redis_server, two_workers, start_orchestrator, tmp_path
):
    ja, en = two_workers
    orch = await start_orchestrator(
        redis_url=redis_server.url,
        redis_password=redis_server.password,
        discovery={"health_check_s": 0.5},
        # Kokoro int8 on a small shared CPU takes over a second to its first clause (it is the GPU
        # engine; cpu_ok is false): the default 1.2 s stall would fail it over again and again.
        playback={"tts_stall_ms": 20000},
    )
    await wait_workers(orch, [ja.address, en.address], timeout=180)
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    try:
        record = json.loads(await client.get(f"appliance:worker:{ja.address}"))
    finally:
        await client.aclose()
    assert record["capabilities"]["languages"] == ["ja-JP"] and record["resident_models"] == [JA]
    assert len(record["resident_bytes"]) == 1 and record["resident_bytes"][0] > 2**20

    japanese, sid = await open_session(orch, JA)
    assert served_by(orch, sid) == ja.address
    pcm = await say(japanese, "駅までの道を教えてください。", timeout=120)
    heard = transcribe_japanese(pcm, 48000, str(tmp_path / "whisper-base"))
    assert cer("駅までの道を教えてください。", heard) <= 0.2, heard
    await japanese.close()

    english, sid = await open_session(orch, EN)
    assert served_by(orch, sid) == en.address
    pcm = await say(english, "The weather is lovely today.")
    assert wer("the weather is lovely today", listen(pcm, 48000, "the weather is lovely today")) <= 0.34
    await english.close()
