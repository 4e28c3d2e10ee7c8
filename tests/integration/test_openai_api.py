"""The orchestrator's /v1 API against the official `openai` SDK: speech in every format decoded
back with PyAV and checked by Whisper, transcriptions of WAVs not made by the appliance in every
response format, API keys, bad input, a client gone mid-stream, several clients at once."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave

import av
import httpx
import numpy as np
import openai
import pytest
from services import OrchestratorProcess
from speech import listen, wer
from voices import espeak_speech, pad

from appliance.interop.api_keys import hash_key, new_key
from appliance.tts.client import TTSClient

KEY = new_key()
SAID = "The weather today is sunny with a light breeze from the west."
HEARD = "Remember to water the plants on the balcony before you leave."


@pytest.fixture(scope="module")
def api(piper_worker):
    orch = OrchestratorProcess(
        [piper_worker.address], env={"APPLIANCE_API__KEYS_SHA256": json.dumps([hash_key(KEY)])}
    )
    try:
        orch.wait_ready()
        yield orch
    finally:
        orch.stop()


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url=api.http + "/v1", api_key=KEY, max_retries=0)


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        parts = [
            f.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for f in resampler.resample(frame)
        ]
    return np.concatenate(parts), 16000


def _wav(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    scaled = samples.astype(np.int64) << (8 * (width - 2))
    frames = np.repeat(scaled[:, None], channels, axis=1).astype(f"<i{width}").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def test_models_lists_the_tts_and_asr_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"tts-1", "whisper-1", "whisper-tiny.en"} <= ids


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "flac", "aac"])
def test_speech_in_every_format_says_the_input(client, fmt):
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="piper-en_US-joe-medium",
        input=SAID,
        response_format=fmt,
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"  # sent as it is made
        data = b"".join(response.iter_bytes())
    samples, rate = (np.frombuffer(data, "<i2"), 24000) if fmt == "pcm" else _decode(data)
    assert wer(SAID, listen(samples, rate, SAID)) <= 0.2


def test_speed_changes_the_length_not_the_words(client):
    normal = client.audio.speech.create(
        model="tts-1", voice="default", input=HEARD, response_format="pcm"
    ).content
    fast = client.audio.speech.create(
        model="tts-1", voice="default", input=HEARD, response_format="pcm", speed=1.5
    ).content
    assert len(fast) < 0.8 * len(normal)
    assert wer(HEARD, listen(np.frombuffer(fast, "<i2"), 24000, HEARD)) <= 0.25


@pytest.fixture(scope="module")
def held_back_wav():
    return _wav(pad(espeak_speech(HEARD, rate=16000), 16000, 0.3, 0.5), 16000)


@pytest.mark.parametrize("fmt", ["json", "text", "verbose_json", "srt", "vtt"])
def test_transcriptions_in_every_response_format(client, held_back_wav, fmt):
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("question.wav", held_back_wav),
        response_format=fmt,
        language="en",
        **({"timestamp_granularities": ["segment"]} if fmt == "verbose_json" else {}),
    )
    if fmt == "json":
        text = result.text
    elif fmt == "verbose_json":
        text = result.text
        assert result.language == "english" and result.duration > 2
        assert result.segments and 0 <= result.segments[0].start < result.segments[-1].end <= result.duration
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:0")
        text = " ".join(line for line in result.splitlines()[2:] if line and "-->" not in line)
    elif fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> ")
        text = " ".join(line for line in result.splitlines()[2:] if line and "-->" not in line)
    else:
        text = result
    assert wer(HEARD, text) <= 0.3


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(8000, 2, 1), (44100, 2, 2), (16000, 4, 1), (8000, 4, 2)]
)
def test_transcriptions_of_any_rate_width_and_channels(client, rate, width, channels):
    wav = _wav(pad(espeak_speech(HEARD, rate=rate), rate, 0.3, 0.5), rate, width, channels)
    assert wer(HEARD, client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav)).text) <= 0.3


def _error(exc: openai.APIStatusError) -> dict:
    error = exc.body if "message" in exc.body else exc.body["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"voice": "no-such-voice"}, 400, "voice_not_found"),
        ({"model": "no-such-model"}, 404, "model_not_found"),
        ({"input": ""}, 400, "invalid_value"),
        ({"input": "word " * 20_000}, 400, "string_above_max_length"),
        ({"response_format": "ogg"}, 400, "unsupported_value"),
        ({"speed": 9}, 400, "invalid_value"),
    ],
)
def test_bad_speech_requests_get_openai_errors(client, kwargs, status, code):
    request = {"model": "tts-1", "voice": "default", "input": "Hello.", **kwargs}
    with pytest.raises(openai.APIStatusError) as raised:
        client.audio.speech.create(**request)
    assert raised.value.status_code == status and _error(raised.value)["code"] == code


@pytest.mark.parametrize(
    ("file", "extra", "status", "code"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 64, {}, 400, "invalid_file"),
        (b"", {}, 400, "invalid_file"),
        (None, {"model": "no-such-model"}, 404, "model_not_found"),
        (None, {"response_format": "tsv"}, 400, "unsupported_value"),
        (None, {"timestamp_granularities": ["word"]}, 400, "unsupported_value"),
        (None, {"language": "fr"}, 400, "unsupported_value"),
    ],
)
def test_bad_transcription_requests_get_openai_errors(client, held_back_wav, file, extra, status, code):
    request = {"model": "whisper-1", "file": ("q.wav", held_back_wav if file is None else file), **extra}
    with pytest.raises(openai.APIStatusError) as raised:
        client.audio.transcriptions.create(**request)
    assert raised.value.status_code == status and _error(raised.value)["code"] == code


@pytest.mark.parametrize("key", [None, "sk-appliance-wrong"])
def test_a_missing_or_wrong_key_is_refused_even_from_loopback(api, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(api.http + "/v1/models", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_the_openapi_document_is_served_without_a_key(api):
    document = httpx.get(api.http + "/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1") and "/v1/audio/speech" in document["paths"]


async def _sessions(address: str) -> int:
    async with TTSClient(address) as worker:
        return (await worker.capabilities()).active_sessions


async def test_a_client_gone_mid_stream_leaves_no_worker_session(api, piper_worker):
    text = " ".join(["This answer is long, and the client hangs up while it is still being made."] * 6)
    body = {"model": "tts-1", "voice": "default", "input": text, "response_format": "pcm"}
    async with (
        httpx.AsyncClient(base_url=api.http, headers={"Authorization": f"Bearer {KEY}"}) as http,
        http.stream("POST", "/v1/audio/speech", json=body) as response,
    ):
        assert response.status_code == 200
        async for _chunk in response.aiter_bytes():
            break  # and hang up
    deadline = time.monotonic() + 15
    while await _sessions(piper_worker.address) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await _sessions(piper_worker.address) == 0


async def test_several_clients_at_once(api, held_back_wav):
    client = openai.AsyncOpenAI(base_url=api.http + "/v1", api_key=KEY, max_retries=0)
    texts = [
        "Good morning, how did you sleep?",
        "Playing your evening playlist now.",
        "Sure, I can help with that.",
        "The kitchen lights are now off.",
    ]
    speech = [
        client.audio.speech.create(model="tts-1", voice="default", input=t, response_format="wav")
        for t in texts
    ]
    heard = [
        client.audio.transcriptions.create(model="whisper-1", file=("q.wav", held_back_wav)) for _ in range(2)
    ]
    results = await asyncio.gather(*speech, *heard)
    for text, result in zip(texts, results[:4], strict=True):
        # Each says its own text, not another's; the tiny checking model mishears a word or two of
        # such short sentences now and then (one word of five is 0.2).
        hypothesis = listen(*_decode(result.content), text)
        scores = {other: wer(other, hypothesis) for other in texts}
        assert min(scores, key=scores.get) == text and scores[text] <= 0.4, (text, hypothesis)
    assert all(wer(HEARD, r.text) <= 0.3 for r in results[4:])
    await client.close()


def test_input_the_worker_refuses_is_a_400_naming_its_limit(piper_worker):
    """An API limit above the worker's max_text_chars (20 000): the worker's refusal is the
    client's error, not a 500, and the next request is served."""
    orch = OrchestratorProcess(
        [piper_worker.address],
        env={
            "APPLIANCE_API__KEYS_SHA256": json.dumps([hash_key(KEY)]),
            "APPLIANCE_API__MAX_INPUT_CHARS": "50000",
        },
    )
    try:
        orch.wait_ready()
        client = openai.OpenAI(base_url=orch.http + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            client.audio.speech.create(model="tts-1", voice="default", input="word " * 5000)
        error = _error(raised.value)
        assert raised.value.status_code == 400 and error["code"] == "invalid_value", error
        assert "20000 characters" in error["message"] and error["param"] == "input"
        speech = client.audio.speech.create(
            model="tts-1", voice="default", input="Hello.", response_format="wav"
        )
        assert len(speech.content) > 10_000
    finally:
        orch.stop()
