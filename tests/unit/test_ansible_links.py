"""The roles' gRPC TLS and Redis user wiring without a device: base's links.yml run for real on this
machine for several inventories (one local host each), the env files the roles template for them
loaded into the services' real settings, the ACL `appliance redis-acl` writes from the role's
arguments checked against the key each worker registers under, and the certificate state script
run on certificates `appliance certs` made."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_ansible import ANSIBLE, _playbook_bin

from appliance import certs, discovery, redis_acl
from appliance.config.loading import load_settings
from appliance.config.orchestrator import OrchestratorSettings
from appliance.config.worker import WorkerSettings

pytestmark = pytest.mark.skipif(
    _playbook_bin() is None, reason="ansible-playbook (ansible-core) is not installed"
)

ROOT = ANSIBLE.parent
ROLES = ANSIBLE / "roles"
PIPER = {"name": "piper", "port": 7001, "metrics_port": 9101}
CASES = {
    "loopback": {},
    "forced": {"appliance_grpc_tls": True},
    "lan": {
        "appliance_tts_workers": [
            {
                "name": "gpu",
                "port": 7002,
                "metrics_port": 9102,
                "host": "192.168.1.30",
                "tls_hosts": ["gpu.lan"],
            },
            PIPER,
        ]
    },
    "wildcard": {"appliance_tts_workers": [{**PIPER, "host": "0.0.0.0"}]},
    "advertised": {
        "appliance_tts_workers": [{**PIPER, "env": {"DISCOVERY__ADVERTISE_ADDRESS": "voice.lan:7101"}}]
    },
    "ipv6": {"appliance_tts_workers": [{**PIPER, "host": "::1"}]},
    "bogus": {"appliance_grpc_tls": "maybe"},
}

PLAY = """\
- hosts: all
  gather_facts: true
  gather_subset: [min]
  tasks:
    - ansible.builtin.include_role: {{name: base, tasks_from: links, public: true}}
    - ansible.builtin.include_vars: {{file: {roles}/orchestrator/defaults/main.yml}}
    - ansible.builtin.include_vars: {{file: {roles}/redis/defaults/main.yml}}
    - ansible.builtin.set_fact: {{appliance_redis_address: "127.0.0.1:6379/0"}}
    - ansible.builtin.file: {{path: "{out}/{{{{ inventory_hostname }}}}", state: directory, mode: "0755"}}
    - ansible.builtin.template:
        src: {roles}/tts_workers/templates/worker.env.j2
        dest: "{out}/{{{{ inventory_hostname }}}}/{{{{ item.name }}}}.env"
        mode: "0644"
      loop: "{{{{ appliance_tts_workers }}}}"
    - ansible.builtin.template:
        src: {roles}/{{{{ item }}}}.env.j2
        dest: "{out}/{{{{ inventory_hostname }}}}/{{{{ item | basename }}}}.env"
        mode: "0644"
      loop: [orchestrator/templates/orchestrator, redis/templates/redis]
    - ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}/links.json"
        mode: "0644"
        content: >-
          {{{{ {{'tls': appliance_grpc_tls_enabled | bool, 'links': appliance_worker_links,
               'leaves': appliance_grpc_tls_leaves}} | to_json }}}}
"""


def play_locally(tmp: Path, inventory: dict, play: str) -> subprocess.CompletedProcess:
    """ansible-playbook of ``play`` on ``inventory`` (local connections), with the roles of this
    tree, its temporary files in ``tmp``."""
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    (tmp / "play.yml").write_text(play)
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_LOCALHOST_WARNING": "false",
    }
    return subprocess.run(
        [_playbook_bin(), "-i", str(tmp / "inventory.json"), str(tmp / "play.yml")],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("links")
    out, passwords = tmp / "out", tmp / "redis"
    inventory = {
        "all": {
            "hosts": CASES,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "appliance_redis_password_dir": str(passwords),
            },
        }
    }
    proc = play_locally(tmp, inventory, PLAY.format(roles=ROLES, out=out))
    return out, passwords, proc


def _links(played, case: str) -> dict:
    out, _, proc = played
    path = out / case / "links.json"
    assert path.exists(), proc.stdout[-6000:] + proc.stderr[-3000:]
    return json.loads(path.read_text())


def _env(played, case: str, *files: str) -> dict[str, str]:
    """The variables systemd would give a unit reading these EnvironmentFile=s in order."""
    env: dict[str, str] = {}
    for name in files:
        for line in (played[0] / case / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = shlex.split(line)[0].partition("=")
                env[key] = value
    return env


def _settings(monkeypatch, cls, toml: str, env: dict[str, str]):
    for key in [k for k in os.environ if k.startswith("APPLIANCE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(cls, ROOT / "etc/appliance" / toml)


def test_every_good_inventory_passes_and_a_bad_setting_is_named(played):
    _, _, proc = played
    failed = {m[0]: int(m[1]) for m in re.findall(r"(?m)^(\S+)\s*:\s*ok=\d+.*\sfailed=(\d+)", proc.stdout)}
    assert failed == {case: int(case == "bogus") for case in CASES}, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "appliance_grpc_tls is auto, true or false (not maybe)" in proc.stdout


def test_auto_turns_tls_on_only_when_a_worker_listens_beyond_loopback(played):
    tls = {case: _links(played, case)["tls"] for case in CASES if case != "bogus"}
    assert tls == {
        "loopback": False,
        "forced": True,
        "lan": True,
        "wildcard": True,
        "advertised": False,
        "ipv6": False,
    }


def test_each_worker_advertises_the_address_its_certificate_names(played):
    def worker(case: str, name: str) -> tuple[str, list[str]]:
        data = _links(played, case)
        (leaf,) = [leaf for leaf in data["leaves"] if leaf["worker"] == name]
        return data["links"][name]["address"], leaf["hosts"]

    assert worker("loopback", "piper") == ("127.0.0.1:7001", ["127.0.0.1", "localhost"])
    assert worker("lan", "gpu") == (
        "192.168.1.30:7002",
        ["127.0.0.1", "localhost", "192.168.1.30", "gpu.lan"],
    )
    assert worker("lan", "piper") == ("127.0.0.1:7001", ["127.0.0.1", "localhost"])
    # On all interfaces a worker advertises this machine's name, as socket.gethostname() gives it.
    assert worker("wildcard", "piper") == (
        f"{socket.gethostname()}:7001",
        ["127.0.0.1", "localhost", socket.gethostname()],
    )
    assert worker("advertised", "piper") == ("voice.lan:7101", ["127.0.0.1", "localhost", "voice.lan"])
    assert worker("ipv6", "piper") == ("[::1]:7001", ["127.0.0.1", "localhost", "::1"])
    leaves = _links(played, "lan")["leaves"]
    assert [leaf["name"] for leaf in leaves] == ["orchestrator", "worker-gpu", "worker-piper"]


def test_with_tls_the_env_files_give_each_service_its_certificate_and_redis_user(played, monkeypatch):
    worker = _settings(
        monkeypatch, WorkerSettings, "tts/piper.toml", _env(played, "forced", "redis.env", "piper.env")
    )
    tls = Path("/etc/appliance/tls")
    assert (worker.tls.cert, worker.tls.key, worker.tls.client_ca) == (
        tls / "worker-piper.crt",
        tls / "worker-piper.key",
        tls / "ca.crt",
    )
    assert worker.redis_url == "redis://worker-piper@127.0.0.1:6379/0"
    assert worker.discovery.password_file == played[1] / "worker-piper.password"
    assert worker.discovery.advertise_address == "127.0.0.1:7001"

    orchestrator = _settings(
        monkeypatch,
        OrchestratorSettings,
        "orchestrator.toml",
        _env(played, "forced", "redis.env", "orchestrator.env"),
    )
    assert (orchestrator.tls.ca, orchestrator.tls.cert, orchestrator.tls.key) == (
        tls / "ca.crt",
        tls / "orchestrator.crt",
        tls / "orchestrator.key",
    )
    assert orchestrator.tls.loopback is True and orchestrator.tls.allow_plaintext is False
    assert orchestrator.redis_url == "redis://orchestrator@127.0.0.1:6379/0"
    assert orchestrator.discovery.password_file == played[1] / "orchestrator.password"


def test_without_tls_the_services_speak_plaintext_on_loopback(played, monkeypatch):
    worker = _settings(
        monkeypatch, WorkerSettings, "tts/piper.toml", _env(played, "loopback", "redis.env", "piper.env")
    )
    assert not worker.tls.enabled and worker.redis_url == "redis://worker-piper@127.0.0.1:6379/0"
    orchestrator = _settings(
        monkeypatch,
        OrchestratorSettings,
        "orchestrator.toml",
        _env(played, "loopback", "redis.env", "orchestrator.env"),
    )
    assert orchestrator.tls.ca is None and orchestrator.tls.loopback is False


def test_each_worker_user_may_write_the_key_the_worker_registers_under(played, monkeypatch, tmp_path):
    from appliance.tts.registration import advertised_address

    passwords = played[1]
    passwords.mkdir(exist_ok=True)
    links = _links(played, "lan")["links"]
    for user in ["orchestrator", *(link["redis_user"] for link in links.values())]:
        (passwords / f"{user}.password").write_text(f"secret-of-{user}\n")
    parser = argparse.ArgumentParser()
    redis_acl.add_parser(parser.add_subparsers())
    out = tmp_path / "users.acl"
    args = parser.parse_args(
        ["redis-acl", "--orchestrator-password-file", str(passwords / "orchestrator.password")]
        + [f"--worker={link['redis_acl']}" for link in links.values()]
        + ["--out", str(out)]
    )
    assert args.func(args) == 0
    lines = {line.split()[1]: line for line in out.read_text().splitlines()}
    assert set(lines) == {"default", "orchestrator", "worker-gpu", "worker-piper"}
    for name in links:
        settings = _settings(
            monkeypatch, WorkerSettings, "tts/piper.toml", _env(played, "lan", "redis.env", f"{name}.env")
        )
        key = discovery.worker_key(settings.discovery.key_prefix, advertised_address(settings, settings.port))
        assert f" ~{key} " in lines[f"worker-{name}"], lines
        assert settings.redis_url.startswith(f"redis://worker-{name}@")


def test_the_certificate_state_script_reads_days_left_and_the_last_request(tmp_path):
    certs.create_ca(tmp_path)
    certs.issue(tmp_path, "worker-piper", ["127.0.0.1"])
    (tmp_path / "worker-piper.request").write_text("hosts 127.0.0.1\n")
    script = ROLES / "base/files/tls_state.py"
    proc = subprocess.run(
        [sys.executable, "-c", script.read_text(), str(tmp_path), "worker-piper", "orchestrator"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    state = json.loads(proc.stdout)
    assert state["orchestrator"] == {"days": -1, "request": ""}
    assert state["worker-piper"]["request"] == "hosts 127.0.0.1\n"
    assert certs.LEAF_DAYS - 2 <= state["worker-piper"]["days"] <= certs.LEAF_DAYS
