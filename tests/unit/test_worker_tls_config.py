"""The TLS settings, the dialling policy (TLS, loopback plaintext, refused plaintext) and the CA."""

from __future__ import annotations

import logging
import stat

import pytest
from cryptography import x509

from appliance import certs
from appliance.config import ConfigError, OrchestratorSettings, WorkerSettings, load_settings
from appliance.config.tls import WorkerLinkTlsSettings, WorkerTlsSettings
from appliance.orchestrator.workers.dialer import PlaintextRefused, WorkerDialer
from appliance.orchestrator.workers.pool import TtsUnavailable
from appliance.orchestrator.workers.static_pool import StaticPool
from appliance.rpc.tls import is_loopback


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    certs.create_ca(d)
    return d


@pytest.mark.parametrize(
    "address, local",
    [
        ("127.0.0.1:7001", True),
        ("127.3.4.5:7001", True),
        ("[::1]:7001", True),
        ("localhost:7001", True),
        ("10.0.0.2:7001", False),
        ("0.0.0.0:7001", False),
        ("worker.lan:7001", False),
        ("[fe80::1]:7001", False),
    ],
)
def test_loopback_is_told_by_address_or_name(address, local):
    assert is_loopback(address) is local


@pytest.mark.parametrize(
    "model, fields, message",
    [
        (WorkerTlsSettings, {"cert": "/a.crt"}, "cert and key go together"),
        (WorkerTlsSettings, {"client_ca": "/ca.crt"}, "needs the worker's own cert"),
        (WorkerLinkTlsSettings, {"key": "/a.key"}, "cert and key go together"),
        (WorkerLinkTlsSettings, {"cert": "/a.crt", "key": "/a.key"}, "needs ca"),
    ],
)
def test_incomplete_tls_settings_are_named(model, fields, message):
    with pytest.raises(ValueError, match=message):
        model(**fields)


def test_the_sections_load_from_the_environment(monkeypatch, ca):
    monkeypatch.setenv("APPLIANCE_TLS__CA", str(ca / "ca.crt"))
    monkeypatch.setenv("APPLIANCE_TLS__ALLOW_PLAINTEXT", "true")
    s = load_settings(OrchestratorSettings)
    assert s.tls.ca == ca / "ca.crt" and s.tls.allow_plaintext is True
    with pytest.raises(ConfigError, match="tls.ca: unknown key"):  # the orchestrator's, not the worker's
        load_settings(WorkerSettings)
    monkeypatch.delenv("APPLIANCE_TLS__CA")
    monkeypatch.delenv("APPLIANCE_TLS__ALLOW_PLAINTEXT")
    monkeypatch.setenv("APPLIANCE_TLS__CERT", str(ca / "ca.crt"))
    with pytest.raises(ConfigError, match="cert and key go together"):
        load_settings(WorkerSettings)


def test_without_a_ca_loopback_is_plaintext_and_another_host_is_refused():
    dialer = WorkerDialer()
    assert dialer.credentials_for("127.0.0.1:7001") is None
    with pytest.raises(PlaintextRefused, match=r"10.0.0.2:7001 is not on loopback.*\[tls\] ca"):
        dialer.credentials_for("10.0.0.2:7001")


def test_plaintext_to_another_host_by_name_is_allowed_and_warned_once(caplog):
    dialer = WorkerDialer(WorkerLinkTlsSettings(allow_plaintext=True))
    with caplog.at_level(logging.WARNING):
        assert dialer.credentials_for("10.0.0.2:7001") is None
        assert dialer.credentials_for("10.0.0.2:7001") is None
    assert [r.message for r in caplog.records].count(
        "plaintext gRPC to worker=10.0.0.2:7001 on another host ([tls] allow_plaintext = true)"
    ) == 1


async def test_with_a_ca_other_hosts_get_tls_and_loopback_only_when_asked(ca):
    dialer = WorkerDialer(WorkerLinkTlsSettings(ca=ca / "ca.crt"))
    assert dialer.credentials_for("10.0.0.2:7001") is not None
    assert dialer.credentials_for("127.0.0.1:7001") is None
    client = dialer.dial("10.0.0.2:7001")  # a grpc.aio channel: made inside a running loop
    assert client.tls is True
    await client.close()
    everywhere = WorkerDialer(WorkerLinkTlsSettings(ca=ca / "ca.crt", loopback=True))
    assert everywhere.credentials_for("127.0.0.1:7001") is not None


def test_a_missing_or_non_pem_ca_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the CA certificate .*nope.crt"):
        WorkerDialer(WorkerLinkTlsSettings(ca=tmp_path / "nope.crt"))
    (tmp_path / "junk.crt").write_text("hello")
    with pytest.raises(ConfigError, match=r"junk.crt is not PEM"):
        WorkerDialer(WorkerLinkTlsSettings(ca=tmp_path / "junk.crt"))


async def test_a_static_pool_lists_a_refused_worker_and_says_why_no_session_started():
    pool = StaticPool(["10.0.0.2:7001"])
    try:
        [listed] = pool.view()["workers"]
        assert listed["address"] == "10.0.0.2:7001" and listed["down"].startswith("refused: ")
        with pytest.raises(TtsUnavailable, match=r"10.0.0.2:7001: refused \(.*plaintext gRPC"):
            await pool.start_session("s1")
    finally:
        await pool.close()


def test_an_issued_certificate_is_signed_by_the_ca_for_the_hosts_given(ca):
    cert_path, key_path = certs.issue(ca, "worker1", ["10.0.0.2", "worker1.lan"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    authority = x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(authority)  # raises if not
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    assert san.get_values_for_type(x509.DNSName) == ["worker1.lan"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600


def test_the_ca_is_not_replaced_by_accident_and_bad_requests_are_named(ca, tmp_path):
    with pytest.raises(certs.CertError, match="would orphan every certificate"):
        certs.create_ca(ca)
    with pytest.raises(certs.CertError, match="run `appliance certs init`"):
        certs.issue(tmp_path, "w", ["10.0.0.2"])
    with pytest.raises(certs.CertError, match="at least one --host"):
        certs.issue(ca, "w", [])
    with pytest.raises(certs.CertError, match="neither an IP address nor a host name"):
        certs.issue(ca, "w", ["bad host!"])
    with pytest.raises(certs.CertError, match="a name is 1-64"):
        certs.issue(ca, "../w", ["10.0.0.2"])


def test_the_command_line_makes_a_ca_and_a_certificate(tmp_path, capsys):
    from appliance.cli import main

    assert main(["certs", "init", "--dir", str(tmp_path)]) == 0
    assert main(["certs", "issue", "w1", "--host", "10.0.0.2", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "w1.crt").exists() and (tmp_path / "w1.key").exists()
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 1
    assert "would orphan" in capsys.readouterr().err


async def test_the_voice_catalog_skips_a_worker_it_may_not_dial_yet():
    """A worker seen in Redis but not yet marked down by the pool offers no voices, and no error."""
    from types import SimpleNamespace

    from appliance.interop.voices import VoiceCatalog

    pool = SimpleNamespace(
        dialer=WorkerDialer(), view=lambda: {"workers": [{"address": "10.0.0.2:7001", "down": None}]}
    )
    catalog = VoiceCatalog(pool)
    assert await catalog.voices() == []
    await catalog.close()
