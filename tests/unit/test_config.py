from __future__ import annotations

from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import ConfigError, OrchestratorSettings, WorkerSettings, guess_kind, load_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "etc" / "appliance" / "tts" / "piper.toml"


def test_shipped_worker_config_is_valid_and_matches_the_contract():
    s = load_settings(WorkerSettings, SHIPPED)
    assert (s.host, s.port, s.metrics_port) == ("127.0.0.1", 7001, 9101)
    assert s.models.default == "piper-en_US-joe-medium"
    assert s.redis_url is None
    assert s.models.ttl_s == 600


def test_precedence_file_then_env_then_flags(monkeypatch, tmp_path):
    cfg = tmp_path / "w.toml"
    cfg.write_text("port = 7100\n[models]\nttl_s = 100\n")
    assert load_settings(WorkerSettings, cfg).port == 7100
    monkeypatch.setenv("APPLIANCE_PORT", "7200")
    monkeypatch.setenv("APPLIANCE_MODELS__TTL_S", "50")
    s = load_settings(WorkerSettings, cfg)
    assert s.port == 7200 and s.models.ttl_s == 50
    assert load_settings(WorkerSettings, cfg, port=7300).port == 7300
    assert load_settings(WorkerSettings, cfg, port=None).port == 7200  # an absent flag overrides nothing


@pytest.mark.parametrize(
    "body, key",
    [
        ("prot = 7001\n", "prot: unknown key"),
        ('port = "seven"\n', "port:"),
        ("port = 70000\n", "port:"),
        ("[models]\nresident_cap = 0\n", "models.resident_cap:"),
        ("[models]\nttl = 5\n", "models.ttl: unknown key"),
        ('[models]\ndevice = "tpu"\n', "models.device:"),
    ],
)
def test_bad_keys_are_named(tmp_path, body, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_settings(WorkerSettings, cfg)
    assert key in str(info.value)
    assert str(cfg) in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(WorkerSettings, broken)
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(WorkerSettings, tmp_path / "missing.toml")


def test_check_config_command(tmp_path, capsys):
    assert main(["check-config", str(SHIPPED)]) == 0
    assert "valid tts-worker configuration" in capsys.readouterr().out
    tts = tmp_path / "tts"
    tts.mkdir()
    bad = tts / "x.toml"
    bad.write_text("[watchdog]\nstuck_synthesis = 3\n")
    assert main(["check-config", str(bad)]) == 2
    assert "watchdog.stuck_synthesis: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "61", '"soon"'])
def test_tts_retry_s_is_checked_and_named(tmp_path, capsys, value):
    shipped = ROOT / "etc" / "appliance" / "orchestrator.toml"
    assert load_settings(OrchestratorSettings, shipped).playback.tts_retry_s == 5.0
    assert load_settings(OrchestratorSettings, None).playback.tts_retry_s == 5.0
    cfg = tmp_path / "orchestrator.toml"
    cfg.write_text("[playback]\ntts_retry_s = 0\n")
    assert main(["check-config", str(cfg)]) == 0  # 0: give up at once
    cfg.write_text(f"[playback]\ntts_retry_s = {value}\n")
    assert main(["check-config", str(cfg)]) == 2
    assert "playback.tts_retry_s:" in capsys.readouterr().err


def test_guess_kind(tmp_path):
    assert guess_kind(SHIPPED) == "tts-worker"
    with pytest.raises(ConfigError, match="--kind"):
        guess_kind(tmp_path / "something.toml")
