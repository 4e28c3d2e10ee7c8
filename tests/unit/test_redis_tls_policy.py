"""Which Redis URLs a service may use, and the TLS keywords it hands redis-py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance import certs
from appliance.redis_tls import RedisPlaintextRefused, RedisTls


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://localhost/0", "redis://[::1]:6379/0", "unix:///run/redis.sock"],
)
def test_plaintext_on_this_machine_is_allowed(url):
    assert RedisTls().connect_kwargs(url) == {}


@pytest.mark.parametrize(
    "url", ["redis://192.168.1.20:6379/0", "redis://redis.lan/0", "redis://u@[fd00::2]:1/0"]
)
def test_plaintext_to_another_host_is_refused_naming_the_setting(url):
    with pytest.raises(RedisPlaintextRefused, match=r"allow_plaintext = true"):
        RedisTls().connect_kwargs(url)


def test_allowed_plaintext_to_another_host_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        assert RedisTls(allow_plaintext=True).connect_kwargs("redis://192.168.1.20:6379/0") == {}
    assert "plaintext Redis to 192.168.1.20" in caplog.text


def test_rediss_verifies_the_server_against_the_given_ca_with_a_client_certificate(tmp_path: Path):
    certs.create_ca(tmp_path)
    cert, key = certs.issue(tmp_path, "w", ["127.0.0.1"])
    kwargs = RedisTls(tmp_path / "ca.crt", cert, key).connect_kwargs("rediss://10.0.0.2:6379/0")
    assert kwargs == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(tmp_path / "ca.crt"),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    assert RedisTls().connect_kwargs("rediss://10.0.0.2/0") == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def test_bad_combinations_and_files_are_named(tmp_path: Path):
    certs.create_ca(tmp_path)
    cert, _ = certs.issue(tmp_path, "w", ["127.0.0.1"])
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        RedisTls(cert_file=cert).connect_kwargs("rediss://10.0.0.2/0")
    with pytest.raises(ValueError, match="are for TLS"):
        RedisTls(ca_file=tmp_path / "ca.crt").connect_kwargs("redis://127.0.0.1/0")
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="junk.crt is not PEM"):
        RedisTls(ca_file=tmp_path / "junk.crt").connect_kwargs("rediss://10.0.0.2/0")
    with pytest.raises(ValueError, match="missing.crt"):
        RedisTls(ca_file=tmp_path / "missing.crt").connect_kwargs("rediss://10.0.0.2/0")
