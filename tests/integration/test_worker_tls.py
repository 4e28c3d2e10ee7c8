"""gRPC between hosts, for real: the orchestrator in this network namespace, a Piper worker in another
(joined by a veth pair, each with its own address), TLS from the appliance's own CA
(`appliance certs`), mutual where the worker asks for it. A plaintext worker off loopback and a worker
whose certificate another CA signed are refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave

import grpc
import httpx
import netns
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services import OrchestratorProcess, WorkerProcess
from speech import listen, wer

from appliance import certs
from appliance.interop.api_keys import hash_key, new_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

KEY = new_key()
SAID = "Good morning, the kitchen lights are on."


@pytest.fixture(scope="module")
def other_host():
    """A network namespace joined to this one by a veth pair: its name, its address and ours."""
    with netns.other_host("tls", os.getpid() % 200 + 20) as host:
        yield host


@pytest.fixture(scope="module")
def ca(tmp_path_factory, other_host):
    """Our CA, a worker certificate for the other host's address and a client certificate."""
    d = tmp_path_factory.mktemp("tls")
    certs.create_ca(d)
    certs.issue(d, "worker", [other_host.address])
    certs.issue(d, "orchestrator", ["orchestrator.local"])
    return d


def _credentials(d, client: bool = False) -> grpc.ChannelCredentials:
    pair = {}
    if client:
        pair = {
            "private_key": (d / "orchestrator.key").read_bytes(),
            "certificate_chain": (d / "orchestrator.crt").read_bytes(),
        }
    return grpc.ssl_channel_credentials(root_certificates=(d / "ca.crt").read_bytes(), **pair)


def _worker(other_host, env: dict[str, str]) -> WorkerProcess:
    return WorkerProcess(host=other_host.address, netns=other_host.ns, env=env)


def _orchestrator(worker: WorkerProcess, env: dict[str, str]) -> OrchestratorProcess:
    orch = OrchestratorProcess(
        [worker.address], env={"APPLIANCE_API__KEYS_SHA256": json.dumps([hash_key(KEY)]), **env}
    )
    orch.wait_ready()
    return orch


def _speech(orch: OrchestratorProcess) -> httpx.Response:
    body = {"model": "tts-1", "voice": "default", "input": SAID, "response_format": "wav"}
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(orch.http + "/v1/audio/speech", json=body, headers=headers, timeout=60)


def _says(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    with wave.open(io.BytesIO(response.content)) as w:
        pcm, rate = np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()
    return listen(pcm, rate, SAID)


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The worker's health status, or the gRPC status code name of the failure."""
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            )
        except grpc.RpcError as exc:
            return exc.code().name


def _say(worker: WorkerProcess, out, *tls: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "appliance", "say", SAID, "--out", str(out), "--worker", worker.address]
    return subprocess.run([*argv, *tls], check=False, capture_output=True, text=True, timeout=120)


def _say_over_tls(worker: WorkerProcess, ca) -> None:
    """`appliance say --worker` with the CA and a client certificate: a WAV that says the text;
    without the certificate the handshake fails; half a key pair is refused before dialling."""
    out = ca / "said.wav"
    done = _say(worker, out, "--ca", str(ca / "ca.crt"), "--cert", str(ca / "orchestrator.crt"))
    assert done.returncode == 2 and "all three of --ca, --cert and --key" in done.stderr
    assert not out.exists()
    done = _say(worker, out, "--ca", str(ca / "ca.crt"))
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr and not out.exists()
    pair = ("--cert", str(ca / "orchestrator.crt"), "--key", str(ca / "orchestrator.key"))
    done = _say(worker, out, "--ca", str(ca / "ca.crt"), *pair)
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as w:
        pcm, rate = np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()
    assert wer(SAID, listen(pcm, rate, SAID)) <= 0.2


def test_speech_through_a_worker_on_another_host_over_mutual_tls(other_host, ca):
    worker = _worker(
        other_host,
        {
            "APPLIANCE_TLS__CERT": str(ca / "worker.crt"),
            "APPLIANCE_TLS__KEY": str(ca / "worker.key"),
            "APPLIANCE_TLS__CLIENT_CA": str(ca / "ca.crt"),
        },
    )
    try:
        worker.wait_ready(credentials=_credentials(ca, client=True))
        assert "gRPC over TLS" in worker.log()
        serving = health_pb2.HealthCheckResponse.SERVING
        assert _health(worker.address, _credentials(ca, client=True)) == serving
        assert _health(worker.address, None) == "UNAVAILABLE"  # plaintext: no handshake
        assert _health(worker.address, _credentials(ca)) == "UNAVAILABLE"  # no client certificate
        _say_over_tls(worker, ca)

        client_env = {
            "APPLIANCE_TLS__CA": str(ca / "ca.crt"),
            "APPLIANCE_TLS__CERT": str(ca / "orchestrator.crt"),
            "APPLIANCE_TLS__KEY": str(ca / "orchestrator.key"),
        }
        orch = _orchestrator(worker, client_env)
        try:
            assert wer(SAID, _says(_speech(orch))) <= 0.2
        finally:
            orch.stop()

        orch = _orchestrator(worker, {"APPLIANCE_TLS__CA": str(ca / "ca.crt")})  # no client certificate
        try:
            refused = _speech(orch)
            assert refused.status_code == 503, refused.text
            assert "no TTS worker accepted" in refused.json()["error"]["message"]
        finally:
            orch.stop()
    finally:
        worker.stop()


def test_a_plaintext_worker_on_another_host_is_refused_unless_allowed_by_name(other_host):
    worker = _worker(other_host, {})
    try:
        worker.wait_ready()
        assert "plaintext gRPC on" in worker.log()  # the worker warns about itself, too
        orch = _orchestrator(worker, {})
        try:
            refused = _speech(orch)
            assert refused.status_code == 503, refused.text
            message = refused.json()["error"]["message"]
            assert "refused" in message and "[tls] ca" in message, message
            [listed] = httpx.get(orch.http + "/workers", timeout=10).json()["workers"]
            assert listed["down"].startswith("refused"), listed
        finally:
            orch.stop()

        orch = _orchestrator(worker, {"APPLIANCE_TLS__ALLOW_PLAINTEXT": "true"})
        try:
            assert wer(SAID, _says(_speech(orch))) <= 0.2
            assert "plaintext gRPC to worker=" in orch.log()
        finally:
            orch.stop()
    finally:
        worker.stop()


def test_a_worker_whose_certificate_another_ca_signed_is_refused(other_host, ca, tmp_path):
    certs.create_ca(tmp_path)
    certs.issue(tmp_path, "worker", [other_host.address])
    worker = _worker(
        other_host,
        {
            "APPLIANCE_TLS__CERT": str(tmp_path / "worker.crt"),
            "APPLIANCE_TLS__KEY": str(tmp_path / "worker.key"),
        },
    )
    try:
        worker.wait_ready(credentials=_credentials(tmp_path))
        assert _health(worker.address, _credentials(ca)) == "UNAVAILABLE"  # our CA does not vouch for it
        orch = _orchestrator(worker, {"APPLIANCE_TLS__CA": str(ca / "ca.crt")})
        try:
            refused = _speech(orch)
            assert refused.status_code == 503, refused.text
        finally:
            orch.stop()
    finally:
        worker.stop()
