"""Discovery settings: defaults, validation, the password from the environment (never shown)."""

from __future__ import annotations

import pytest

from appliance.cli import main
from appliance.config import ConfigError, OrchestratorSettings, WorkerSettings, load_settings
from appliance.orchestrator.workers import RoutedPool, StaticPool, make_pool


def test_defaults():
    w = load_settings(WorkerSettings)
    assert w.redis_url is None and w.redis_password is None
    assert (w.discovery.key_prefix, w.discovery.heartbeat_s, w.discovery.ttl_s) == ("appliance:", 10.0, 30.0)
    o = load_settings(OrchestratorSettings)
    assert o.discovery.require == ["streaming"] and o.discovery.language == ""


@pytest.mark.parametrize(
    "cls, overrides, says",
    [
        (WorkerSettings, {"redis_url": "http://127.0.0.1:6379"}, "redis_url: "),
        (WorkerSettings, {"discovery": {"heartbeat_s": 10, "ttl_s": 5}}, "must be longer than heartbeat_s"),
        (WorkerSettings, {"discovery": {"advertise_address": "nohost"}}, "advertise_address"),
        (WorkerSettings, {"discovery": {"key_prefix": "has space"}}, "key_prefix"),
        (OrchestratorSettings, {"discovery": {"require": ["teleport"]}}, "unknown capability teleport"),
        (OrchestratorSettings, {"discovery": {"resync": 3}}, "discovery.resync: unknown key"),
    ],
)
def test_bad_settings_are_named(cls, overrides, says):
    with pytest.raises(ConfigError, match=says):
        load_settings(cls, None, **overrides)


def test_password_from_the_environment_is_never_printed(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("APPLIANCE_REDIS_PASSWORD", "hunter2-secret")
    cfg = tmp_path / "orchestrator.toml"
    cfg.write_text('redis_url = "redis://127.0.0.1:6379/0"\n')
    s = load_settings(OrchestratorSettings, cfg)
    assert s.redis_password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(s)
    assert main(["check-config", str(cfg), "--show"]) == 0
    assert "hunter2" not in capsys.readouterr().out


async def test_pool_kind_follows_redis_url():
    static = make_pool(load_settings(OrchestratorSettings))
    assert isinstance(static, StaticPool)
    await static.close()
    routed = make_pool(
        load_settings(
            OrchestratorSettings, None, redis_url="redis://127.0.0.1:1/0", discovery={"language": "en"}
        )
    )
    assert isinstance(routed, RoutedPool) and routed.request.language == "en"
    await routed.close()


async def test_a_missing_password_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="password file"):
        make_pool(
            load_settings(
                OrchestratorSettings,
                None,
                redis_url="redis://127.0.0.1:1/0",
                discovery={"password_file": str(tmp_path / "nope")},
            )
        )


@pytest.mark.parametrize("workers", [["nohost"], ["h:99999"], ["h:1", "h :2"]])
def test_a_static_worker_list_is_checked_like_any_address(workers):
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        load_settings(OrchestratorSettings, None, workers=workers)
