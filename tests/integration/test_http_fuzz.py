"""The orchestrator's HTTP routes under bounded fuzzing, against a real orchestrator (a real Piper
worker, real Whisper): schemathesis drives the /v1 routes from the OpenAPI document the server
serves (valid and invalid requests, seeded), and a seeded fuzzer of our own sends every route what
the document does not describe — JSON nested past any parser's recursion, wrong JSON types, huge
bodies, broken multipart, lying charsets and content types, methods a route does not take.
No request may get a 5xx (but a documented 503 for no TTS worker), the log has no traceback,
no session is left open on the orchestrator or the worker (their /metrics say so), and a
well-formed speech request is still answered with audio."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import random
import re
import urllib.request
import wave

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from services import OrchestratorProcess

from appliance.interop.api_keys import hash_key, new_key

KEY = new_key()
AUTH = {"Authorization": f"Bearer {KEY}"}
# The fuzz comes as a client behind the proxy, so that the wrong secrets it sends lock out that
# address, not the tests' own loopback requests.
FUZZER = {"X-Forwarded-For": "203.0.113.9"}
SEED = 20261205
EXAMPLES = 20  # per operation and kind (examples, valid, invalid)
RAW_REQUESTS = 240
AT_ONCE = 6
SPEECH_TEXTS = ["Hi.", "One two.", "Fine."]
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases every run
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


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


def server_error(status: int, body: bytes) -> bool:
    """A 5xx, but a documented 503 (no TTS worker available)."""
    if status < 500:
        return False
    try:
        return not (status == 503 and json.loads(body)["error"]["code"] == "tts_unavailable")
    except (ValueError, KeyError, TypeError):
        return True


def test_schema_driven_requests_get_no_server_error(api):
    """schemathesis's cases for each operation of the served document: its examples, then valid
    and invalid requests, seeded (derandomized) and bounded."""
    # CPython 3.11 keeps the AST converter's recursion depth in shared state: a collection that
    # runs a finalizer which formats a traceback (an ast.parse) inside another ast.parse — the
    # modules schemathesis imports lazily go through pytest's assertion rewriting — fails that
    # parse with "AST constructor recursion depth mismatch". No collection while it loads.
    gc.collect()
    gc.disable()
    try:
        _schema_driven_requests(api)
    finally:
        gc.enable()


def _schema_driven_requests(api: OrchestratorProcess) -> None:
    schema = schemathesis.openapi.from_url(api.http + "/v1/openapi.json")
    schema.config.generation.update(with_security_parameters=False)  # the key goes in every request
    sent: list[tuple[str, int]] = []
    failures: list[str] = []

    def send(case, known_model: bool) -> None:
        body = case.body
        if isinstance(body, dict):
            if known_model:  # past the model check, to what lies behind it
                body["model"] = "whisper-1" if "file" in body else "tts-1"
            if isinstance(body.get("input"), str):
                body["input"] = body["input"][:200]  # a valid one is spoken: kept short for the CPU
        response = case.call(headers={**AUTH, **FUZZER}, timeout=120)
        sent.append((case.path, response.status_code))
        if server_error(response.status_code, response.content):
            failures.append(f"{case.as_curl_command()} -> {response.status_code} {response.text[:300]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [
            *schema.get_strategies_from_examples(operation),
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        for strategy in strategies:
            # Failures are collected, not raised: shrinking would re-send, and each call is real.
            @BOUNDED
            @given(case=strategy, known_model=st.booleans())
            def fuzz(case, known_model: bool) -> None:
                send(case, known_model)

            try:
                fuzz()
            except Unsatisfiable:  # an operation with no input has no invalid request
                pass
    assert not failures, "\n".join(failures) + "\n" + api.log()[-4000:]
    paths = {path for path, _ in sent}
    assert paths == {"/v1/models", "/v1/audio/voices", "/v1/audio/speech", "/v1/audio/transcriptions"}, paths
    assert {status for _, status in sent} >= {200, 400}, sent


# --- a seeded fuzzer for what the document does not describe ------------------------------------

ROUTES = [  # what the orchestrator serves, the /v1 POSTs the most
    ("GET", "/"),
    ("GET", "/ws"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/workers"),
    ("GET", "/trust"),
    ("GET", "/static/app.js"),
    ("GET", "/static/../../etc/passwd"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/models"),
    ("GET", "/v1/audio/voices"),
    ("POST", "/webrtc/offer"),
    ("POST", "/trust/pair"),
    ("POST", "/livekit/token"),
    *[("POST", "/v1/audio/speech")] * 4,
    *[("POST", "/v1/audio/transcriptions")] * 4,
]
JSON_ROUTES = ["/v1/audio/speech", "/webrtc/offer", "/trust/pair", "/livekit/token"]


def wav(rng: random.Random, seconds: float = 0.3) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(rng.randbytes(int(16000 * seconds) * 2))
    return out.getvalue()


def odd(rng: random.Random) -> object:
    return rng.choice([None, 0, -1, 1e308, True, "", "x" * 5000, [], {}, ["mp3"], {"a": [1]}, "tts-1"])


def speech_body(rng: random.Random) -> dict:
    body = {"model": "tts-1", "input": rng.choice(SPEECH_TEXTS), "voice": "default"}
    keys = ["model", "input", "voice", "response_format", "speed", "stream_format"]
    for key in rng.sample(keys, rng.choice([1, 1, 2])):
        body[key] = odd(rng)
    return body


def json_body(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.randrange(8)
    if kind == 0:
        depth = rng.choice([2_000, 100_000])  # deeper than the parser's recursion (and under /trust's 4 KiB)
        return b"[" * depth + b"]" * depth, "application/json"
    if kind == 1:
        return json.dumps(speech_body(rng)).encode(), "application/json"
    if kind == 7:
        offer = {"type": "offer", "sdp": rng.choice(["v=0\r\n", "junk", "v=0\r\no=- 0 0 IN IP4 0\r\n" * 3])}
        return json.dumps(offer).encode(), "application/json"
    if kind == 2:
        return json.dumps(
            rng.choice([[], 1, "x", None, {"sdp": odd(rng), "type": odd(rng)}])
        ).encode(), "application/json"
    if kind == 3:
        return b"\xff\xfe{" + rng.randbytes(40), "application/json"  # not UTF-8
    if kind == 4:
        body = json.dumps({"model": "tts-1", "input": "Hi.", "voice": "default"}).encode()
        return body, rng.choice(
            ["application/json; charset=nope", "text/plain", "", "application/json; charset=utf-16"]
        )
    if kind == 5:
        return b'{"input": "' + b"x" * (2 << 20) + b'"}', "application/json"  # over the 1 MiB body limit
    return rng.randbytes(rng.randrange(0, 3000)), rng.choice(["application/octet-stream", "application/json"])


def multipart(rng: random.Random) -> tuple[bytes, str]:
    boundary = "fuzzboundary"
    fields = [
        ("model", rng.choice(["whisper-1", "nope", ""])),
        ("response_format", rng.choice(["json", "srt", "x"])),
    ]
    file = rng.choice([wav(rng), wav(rng)[:30], rng.randbytes(500), b"", b"RIFF" + rng.randbytes(60)])
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + file
        + b"\r\n"
    )
    kind = rng.randrange(8)
    content_type = f"multipart/form-data; boundary={boundary}"
    if kind == 0:
        content_type = "multipart/form-data"  # no boundary
    elif kind == 1:
        content_type = "multipart/form-data; boundary=" + "b" * 200
    elif kind == 2:
        content_type = "multipart/form-data; boundary=other"  # not the one in the body
    elif kind == 3:  # a field in a charset that does not exist
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n'
            "Content-Type: text/plain; charset=nope\r\n\r\nen\r\n".encode()
        )
    elif kind == 4:  # a multipart inside the multipart
        inner = b'--in\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n--in--\r\n'
        parts.append(
            f"--{boundary}\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n".encode() + inner + b"\r\n"
        )
    elif kind == 5:  # a part with no name, and none at all for the file
        parts.append(f"--{boundary}\r\n\r\nnameless\r\n".encode())
        file_part = b""
    elif kind == 6:  # cut short
        return (b"".join(parts) + file_part)[: rng.randrange(1, 200)], content_type
    return b"".join(parts) + file_part + f"--{boundary}--\r\n".encode(), content_type


def raw_request(rng: random.Random, secret: str) -> tuple[str, str, bytes, dict]:
    method, route = rng.choice(ROUTES)
    if rng.random() < 0.15:  # a method or a route it does not serve
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "GET", "POST"])
        route = rng.choice([route, "/v1/nope", "/v1/audio", "/%2e%2e/etc/passwd"])
    if rng.random() < 0.5:  # from this machine: only ever the right key, or it would lock us out
        headers = dict(AUTH)
    else:  # through the proxy, from one of many addresses, with any credentials
        headers = {"X-Forwarded-For": f"203.0.113.{rng.randrange(1, 255)}"}
        credential = rng.choice([KEY, secret, "x", None])
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
    if rng.random() < 0.1:
        headers["Origin"] = rng.choice(["http://evil.example", "null", "::"])
    body = b""
    if route == "/v1/audio/transcriptions" and method == "POST":
        body, headers["Content-Type"] = multipart(rng)
    elif route == "/v1/audio/speech" and method == "POST" and rng.random() < 0.6:
        body, headers["Content-Type"] = json.dumps(speech_body(rng)).encode(), "application/json"
    elif route in JSON_ROUTES or method != "GET":
        body, headers["Content-Type"] = json_body(rng)
        if not headers["Content-Type"]:
            del headers["Content-Type"]
    return method, route, body, headers


async def test_seeded_raw_requests_get_no_server_error(api):
    rng = random.Random(SEED)
    seen: list[tuple[str, str, int]] = []
    failures: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def one(method: str, route: str, body: bytes, headers: dict) -> None:
            try:
                async with http.request(method, api.http + route, data=body, headers=headers) as response:
                    content = await response.read()
            except aiohttp.ClientError as exc:
                failures.append(f"{method} {route}: {type(exc).__name__}: {exc}")
                return
            seen.append((method, route, response.status))
            if server_error(response.status, content):
                failures.append(f"{method} {route} {headers} -> {response.status} {content[:300]!r}")

        for _ in range(RAW_REQUESTS // AT_ONCE):
            await asyncio.gather(*(one(*raw_request(rng, api.secret)) for _ in range(AT_ONCE)))
    assert not failures, "\n".join(failures) + "\n" + api.log()[-4000:]
    assert {s for _, _, s in seen} & {400, 401, 404, 405, 413}, seen  # the fuzz reached the checks


def metric_sum(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE))


async def test_afterwards_nothing_crashed_no_session_is_open_and_speech_works(api, piper_worker):
    worker_metrics = f"http://127.0.0.1:{piper_worker.metrics_port}/metrics"

    def open_sessions() -> float:
        return metric_sum(api.http + "/metrics", "appliance_sessions_active") + metric_sum(
            worker_metrics, "appliance_tts_active_sessions"
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while open_sessions() and loop.time() < deadline:
        await asyncio.sleep(0.5)
    assert open_sessions() == 0, api.log()[-6000:]
    assert api.proc.poll() is None, api.log()
    assert "Traceback" not in api.log(), api.log()[-6000:]

    response = await asyncio.to_thread(
        requests.post,
        api.http + "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Still speaking after all that.",
            "voice": "default",
            "response_format": "pcm",
        },
        headers=AUTH,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert len(response.content) > 24_000, len(response.content)  # over half a second at 24 kHz
