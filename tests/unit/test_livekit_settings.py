"""[livekit]: what enabling it needs, where the secret comes from, the tokens it mints, and that the
orchestrator without it never imports the LiveKit SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.config import ConfigError, LiveKitSettings, OrchestratorSettings, load_settings


def test_enabling_needs_url_key_and_secret():
    with pytest.raises(ConfigError) as err:
        load_settings(OrchestratorSettings, None, livekit={"enabled": True})
    assert "url, api_key, api_secret (or api_secret_file)" in str(err.value)
    with pytest.raises(ConfigError, match="ws://"):
        load_settings(OrchestratorSettings, None, livekit={"url": "127.0.0.1:7880"})


def test_the_secret_from_a_file_or_the_environment_and_never_shown(tmp_path, monkeypatch):
    path = tmp_path / "secret"
    path.write_text("from-the-file\n")
    s = LiveKitSettings(enabled=True, url="ws://127.0.0.1:7880", api_key="k", api_secret_file=path)
    assert s.secret() == "from-the-file"
    monkeypatch.setenv("APPLIANCE_LIVEKIT__API_SECRET", "from-the-env")
    settings = load_settings(
        OrchestratorSettings, None, livekit={"enabled": True, "url": "ws://h:1", "api_key": "k"}
    )
    assert settings.livekit.secret() == "from-the-env"
    assert "from-the-env" not in repr(settings) and "from-the-env" not in settings.model_dump_json()


def test_the_page_token_is_for_one_room_and_a_microphone():
    import jwt
    from livekit import api

    from appliance.transport.livekit import LiveKitEndpoint

    secret = "s" * 40
    endpoint = LiveKitEndpoint(
        None, LiveKitSettings(enabled=True, url="ws://h:1", api_key="key", api_secret=secret, token_ttl_s=60)
    )
    claims = api.TokenVerifier("key", secret).verify(endpoint.mint("appliance-room", "person-1"))
    v = claims.video
    assert claims.identity == "person-1" and v.room == "appliance-room" and v.room_join
    assert list(v.can_publish_sources) == ["microphone"] and not v.room_admin and not v.room_create
    assert not v.agent
    agent = api.TokenVerifier("key", secret).verify(endpoint.mint("appliance-room", "appliance", agent=True))
    assert agent.video.agent and agent.video.room == "appliance-room"
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier("key", "t" * 40).verify(endpoint.mint("appliance-room", "person-1"))


def test_without_livekit_the_sdk_is_never_imported():
    code = (
        "import sys\n"
        "from appliance.config import OrchestratorSettings, load_settings\n"
        "from appliance.orchestrator.server import Orchestrator\n"
        "import appliance.cli, appliance.embedded\n"
        "o = Orchestrator(load_settings(OrchestratorSettings, None), asr=object())\n"
        "o.app()\n"
        "print(sorted(m for m in sys.modules if m == 'livekit' or m.startswith('livekit.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_run_flag_settings_merge_with_the_key_and_secret_from_the_environment(monkeypatch):
    """What `appliance run --livekit-url URL` passes: the URL; key and secret stay in the environment."""
    from appliance.cli import build_parser

    args = build_parser().parse_args(["run", "--livekit-url", "ws://127.0.0.1:7880"])
    monkeypatch.setenv("APPLIANCE_LIVEKIT__API_KEY", "env-key")
    monkeypatch.setenv("APPLIANCE_LIVEKIT__API_SECRET", "env-secret")
    settings = load_settings(OrchestratorSettings, None, livekit={"enabled": True, "url": args.livekit_url})
    lk = settings.livekit
    assert lk.enabled and lk.url == "ws://127.0.0.1:7880" and lk.api_key == "env-key"
    assert lk.secret() == "env-secret"
