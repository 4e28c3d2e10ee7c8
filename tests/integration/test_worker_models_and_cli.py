"""Model RPCs, capabilities, health and metrics of the real worker process; the `appliance` CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
import uuid

import grpc
import numpy as np
import pytest
from speech import listen, wer

from appliance.audio.wavio import read_wav
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import Control, TTSClient

DEFAULT = "piper-en_US-joe-medium"


@pytest.fixture
async def client(piper_worker):
    async with TTSClient(piper_worker.address) as c:
        yield c


async def test_capabilities_and_models_tell_the_truth(client):
    caps = await client.capabilities()
    assert caps.default_model == DEFAULT
    assert DEFAULT in caps.resident_models and "mock-sine" not in caps.resident_models
    assert set(caps.available_models) >= {DEFAULT, "mock-sine"}
    assert list(caps.output_sample_rates) == [48000] and caps.frame_duration_ms == 20 and caps.streaming
    assert "piper" in caps.engines
    models = {m.model_id: m for m in (await client.list_models()).models}
    assert models[DEFAULT].state == pb.RESIDENT and models[DEFAULT].is_default
    assert models[DEFAULT].native_sample_rate == 22050


async def test_load_use_and_unload_a_second_model(client):
    reply = await client.load_model("mock-sine")
    assert reply.success
    assert "mock-sine" in (await client.capabilities()).resident_models
    sid = f"m-{uuid.uuid4().hex[:8]}"
    await client.start_session(sid, "mock-sine")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.unload_model("mock-sine")  # in use
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    pcm, frames = await client.synthesize_all(sid, "beep beep")
    assert frames[-1].is_final and len(pcm) > 0
    await client.end_session(sid)
    assert (await client.unload_model("mock-sine")).success
    models = {m.model_id: m for m in (await client.list_models()).models}
    assert models["mock-sine"].state == pb.AVAILABLE and models["mock-sine"].refcount == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.unload_model("mock-sine")  # not resident any more
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_metrics_endpoint_reports_what_happened(client, piper_worker):
    sid = f"m-{uuid.uuid4().hex[:8]}"
    await client.start_session(sid)
    await client.synthesize_all(sid, "Counting frames.")
    await client.end_session(sid)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.control("ghost", Control.PAUSE)
    url = f"http://127.0.0.1:{piper_worker.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert "appliance_tts_ttfa_seconds_count" in body
    assert f'appliance_tts_frames_total{{model="{DEFAULT}"}}' in body
    assert 'appliance_tts_errors_total{code="NOT_FOUND",rpc="Control"}' in body
    assert "appliance_tts_resident_models 1.0" in body
    assert "appliance_tts_watchdog_healthy 1.0" in body


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_say_with_an_in_process_worker(tmp_path):
    out = tmp_path / "hello.wav"
    text = "Good evening, the appliance is ready to talk."
    result = _cli("say", text, "--out", str(out))
    assert result.returncode == 0, result.stderr
    samples, rate = read_wav(out)
    assert rate == 48000 and len(samples) % 960 == 0 and len(samples) > 48000 * 0.8
    assert wer(text, listen(samples, rate, text)) <= 0.2


def test_say_against_a_running_worker_with_a_model(tmp_path, piper_worker):
    out = tmp_path / "tones.wav"
    result = _cli(
        "say", "one two three", "--out", str(out), "--worker", piper_worker.address, "--model", "mock-sine"
    )
    assert result.returncode == 0, result.stderr
    samples, rate = read_wav(out)
    assert rate == 48000 and np.abs(samples).max() > 1000


def test_say_reports_an_unknown_model_clearly(tmp_path, piper_worker):
    result = _cli(
        "say", "hi", "--out", str(tmp_path / "x.wav"), "--worker", piper_worker.address, "--model", "nope"
    )
    assert result.returncode != 0
    assert "unknown model id 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_list(tmp_path):
    result = _cli("models", "list", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(DEFAULT))
    # kind, engine, licence, state in the (empty) dir, and whether the package that ships it is installed
    assert line.split() == [DEFAULT, "tts", "piper", "MIT", "63.2", "MB", "missing", "yes"]
