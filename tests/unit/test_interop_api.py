"""The /v1 API's parts that need no worker: API keys, the transcript formats, the OpenAPI
document against the routes the orchestrator really registers, and the settings."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from appliance.asr.base import Transcript, TranscriptSegment
from appliance.config import ConfigError, OrchestratorSettings, load_settings
from appliance.interop import openapi
from appliance.interop.api_keys import KeyCheck, hash_key, new_key
from appliance.interop.openai_api import OpenAiApi
from appliance.interop.transcript_formats import render
from appliance.orchestrator.server import Orchestrator


def _check(**api) -> KeyCheck:
    return KeyCheck(load_settings(OrchestratorSettings, None, api=api).api)


def test_a_listed_key_passes_and_others_do_not():
    key = new_key()
    check = _check(keys_sha256=[hash_key(key)])
    assert check.allows("192.0.2.1", CIMultiDict(Authorization=f"Bearer {key}"))
    assert not check.allows("192.0.2.1", CIMultiDict(Authorization=f"Bearer {key}x"))
    assert not check.allows("192.0.2.1", CIMultiDict(Authorization=f"Basic {key}"))
    assert not check.allows("127.0.0.1", CIMultiDict())  # loopback needs a key unless configured otherwise


def test_loopback_without_key_only_when_configured_and_never_through_a_proxy():
    check = _check(loopback_without_key=True)
    assert check.allows("127.0.0.1", CIMultiDict()) and check.allows("::1", CIMultiDict())
    assert not check.allows("192.0.2.1", CIMultiDict())
    assert not check.allows("127.0.0.1", CIMultiDict({"X-Forwarded-For": "192.0.2.1"}))


def test_keys_must_be_configured_as_digests_not_as_keys():
    with pytest.raises(ConfigError, match="sha256"):
        load_settings(OrchestratorSettings, None, api={"keys_sha256": ["sk-appliance-plain"]})


def test_wyoming_uri_must_be_tcp_or_unix():
    with pytest.raises(ConfigError, match="tcp://"):
        load_settings(OrchestratorSettings, None, wyoming={"uri": "http://0.0.0.0:10200"})


def _transcript() -> Transcript:
    segments = [TranscriptSegment(0.0, 1.5, "Hello there."), TranscriptSegment(1.5, 3.25, "General Kenobi.")]
    return Transcript("Hello there. General Kenobi.", "en", 3.25, 10.0, segments=segments)


def test_transcript_formats():
    t = _transcript()
    assert render(t, "json") == ({"text": t.text}, "application/json")
    assert render(t, "text") == (t.text, "text/plain")
    verbose, _ = render(t, "verbose_json")
    assert verbose["language"] == "english" and verbose["duration"] == 3.25
    assert [(s["start"], s["end"]) for s in verbose["segments"]] == [(0.0, 1.5), (1.5, 3.25)]
    srt, _ = render(t, "srt")
    assert (
        srt
        == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,250\nGeneral Kenobi.\n"
    )
    vtt, _ = render(t, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")


async def test_the_openapi_document_describes_exactly_the_routes_served():  # the orchestrator is made in a loop
    orchestrator = Orchestrator(load_settings(OrchestratorSettings, None, workers=["127.0.0.1:1"]))
    OpenAiApi.mount(orchestrator)
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in orchestrator.app().router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1/") and r.method != "HEAD"
    }
    doc = openapi.document()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served - {("get", "/v1/openapi.json")} == documented


def test_the_openapi_document_is_valid_openapi_3_1():
    from openapi_spec_validator import validate

    validate(openapi.document())
