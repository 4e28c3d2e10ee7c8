"""The pieces of access control that are pure logic: the secret file and its cookies, the sliding
rate limit, who counts as the machine itself, and the [access] settings' checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from appliance.config import AccessSettings
from appliance.orchestrator.access.addresses import client_address, is_local, is_loopback, origin_host
from appliance.orchestrator.access.limits import RateLimit
from appliance.orchestrator.access.secret import SecretStore, new_secret, normalise


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_secret_is_made_0600_and_typed_loosely(tmp_path):
    store = SecretStore(tmp_path / "state" / "access_secret")
    secret = store.get()
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert len(secret) == 24 and secret.count("-") == 4
    assert store.matches(secret.upper().replace("-", " "))
    assert not store.matches(new_secret()) and not store.matches("") and not store.matches(None)
    assert normalise("ABCD EFGH-ijkl mnop qrst") == "abcd-efgh-ijkl-mnop-qrst"


def test_rotating_ends_every_cookie_and_is_seen_without_a_restart(tmp_path):
    store = SecretStore(tmp_path / "access_secret")
    cookie = store.cookie()
    assert store.cookie_valid(cookie, 3600)
    other = SecretStore(store.path)  # `appliance access rotate`, in another process
    other.rotate()
    assert not store.cookie_valid(cookie, 3600)
    assert store.get() == other.get()


def test_a_cookie_expires_and_a_forged_one_is_refused(tmp_path):
    store = SecretStore(tmp_path / "access_secret")
    cookie = store.cookie(now=10_000)
    assert store.cookie_valid(cookie, 3600, now=10_000 + 3599)
    assert not store.cookie_valid(cookie, 3600, now=10_000 + 3601)
    version, issued, mac = cookie.split(".")
    assert not store.cookie_valid(f"{version}.{int(issued) + 1}.{mac}", 3600, now=10_000)
    assert not store.cookie_valid("v1.x.y", 3600) and not store.cookie_valid(None, 3600)


def test_the_rate_limit_slides_and_hints_when_to_retry():
    clock = Clock()
    limit = RateLimit(2, clock=clock)
    assert limit.take("a") == 0 and limit.take("a") == 0
    clock.now += 20
    wait = limit.take("a")
    assert wait == pytest.approx(40)
    assert limit.take("b") == 0  # per address
    clock.now += 40
    assert limit.take("a") == 0  # the first event left the window


def test_only_a_direct_loopback_client_is_the_machine_itself():
    assert is_local("127.0.0.1", {}) and is_local("::1", {}) and is_local("::ffff:127.0.0.1", {})
    assert not is_local("127.0.0.1", {"X-Forwarded-For": "192.168.1.5"})
    assert not is_local("192.168.1.5", {})
    assert client_address("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 192.168.1.5"}) == "192.168.1.5"
    assert client_address("192.168.1.9", {"X-Forwarded-For": "1.2.3.4"}) == "192.168.1.9"  # not our proxy
    assert is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert origin_host("https://Appliance.Local:8443") == "appliance.local"


def test_access_settings_name_what_is_wrong():
    with pytest.raises(ValidationError, match="not an address or network"):
        AccessSettings(wyoming_allow=["home-assistant"])
    with pytest.raises(ValidationError, match="not an origin"):
        AccessSettings(allowed_origins=["voice.example.org/page"])
    assert AccessSettings(enabled=False).enabled is False
    with pytest.raises(ValidationError):
        AccessSettings(enabled="sometimes")


def test_access_show_makes_and_prints_the_secret_and_rotate_replaces_it(tmp_path, capsys):
    from appliance.cli import main

    config = tmp_path / "orchestrator.toml"
    config.write_text(f'[access]\nsecret_file = "{tmp_path / "access_secret"}"\n')
    assert main(["access", "show", "--config", str(config), "--host", "voice.lan"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert (tmp_path / "access_secret").read_text().strip() == secret
    assert f"https://voice.lan/trust#secret={secret}" in out.err
    assert main(["access", "rotate", "--config", str(config)]) == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated != secret and (tmp_path / "access_secret").read_text().strip() == rotated
    assert main(["access", "show", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == rotated
