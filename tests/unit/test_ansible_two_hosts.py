"""The roles' wiring for workers on another host, without a device: base's links.yml run for real for
the appliance host of an inventory with a group tts_hosts, then tts_host_links.yml for the worker
box (both local connections); the env files each side's roles template loaded into the services'
real settings. The deploy tier (tests/deploy/test_two_hosts.py) installs the same on two hosts."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from test_ansible import _playbook_bin
from test_ansible_links import ROLES, _settings, play_locally

from appliance.config.orchestrator import OrchestratorSettings
from appliance.config.worker import WorkerSettings

pytestmark = pytest.mark.skipif(
    _playbook_bin() is None, reason="ansible-playbook (ansible-core) is not installed"
)

BOX_ADDRESS = "192.168.7.51"
REDIS_ADDRESS = "192.168.7.50"

PLAY = """\
- hosts: all:!tts_hosts
  gather_facts: true
  gather_subset: [min]
  tasks:
    - ansible.builtin.include_role: {{name: base, tasks_from: links, public: true}}
    - ansible.builtin.include_vars: {{file: {roles}/orchestrator/defaults/main.yml}}
    - ansible.builtin.include_vars: {{file: {roles}/redis/defaults/main.yml}}
    - ansible.builtin.set_fact:
        appliance_redis_address: "127.0.0.1:6379/0"
        appliance_redis_tls_address_port_db: "{{{{ appliance_redis_tls_host }}}}:6379/0"
    - ansible.builtin.file: {{path: "{out}/main", state: directory, mode: "0755"}}
    - ansible.builtin.template:
        src: {roles}/{{{{ item }}}}.env.j2
        dest: "{out}/main/{{{{ item | basename }}}}.env"
        mode: "0644"
      loop: [orchestrator/templates/orchestrator, redis/templates/redis]
    - ansible.builtin.template:
        src: {roles}/redis/templates/appliance.conf.j2
        dest: "{out}/main/redis.conf"
        mode: "0644"
    - ansible.builtin.copy:
        dest: "{out}/main/links.json"
        mode: "0644"
        content: "{{{{ {{'links': appliance_worker_links, 'leaves': appliance_grpc_tls_leaves}} | to_json }}}}"

- hosts: tts_hosts
  gather_facts: true
  gather_subset: [min]
  vars:
    appliance_tts_host: true
  tasks:
    - ansible.builtin.include_role: {{name: base, tasks_from: tts_host_links, public: true}}
    - ansible.builtin.file: {{path: "{out}/box", state: directory, mode: "0755"}}
    - ansible.builtin.template:
        src: {roles}/tts_workers/templates/worker.env.j2
        dest: "{out}/box/{{{{ item.name }}}}.env"
        mode: "0644"
      loop: "{{{{ appliance_tts_workers }}}}"
"""


def _run(tmp, hosts: dict, children: dict) -> subprocess.CompletedProcess:
    inventory = {
        "all": {
            "hosts": hosts,
            "children": children,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "appliance_redis_password_dir": str(tmp / "redis"),
            },
        }
    }
    return play_locally(tmp, inventory, PLAY.format(roles=ROLES, out=tmp / "out"))


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-hosts")
    proc = _run(
        tmp,
        {"main": {"appliance_redis_tls_address": REDIS_ADDRESS}},
        {
            "tts_hosts": {
                "hosts": {
                    "box": {
                        "ansible_host": BOX_ADDRESS,
                        "appliance_tts_workers": [{"name": "box1", "port": 7001, "metrics_port": 9101}],
                    }
                }
            }
        },
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return tmp / "out"


def _env(path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = shlex.split(line)[0].partition("=")
            env[key] = value
    return env


def test_the_box_worker_listens_everywhere_and_advertises_the_box_address(played, monkeypatch):
    worker = _settings(monkeypatch, WorkerSettings, "tts/piper.toml", _env(played / "box/box1.env"))
    assert worker.host == "0.0.0.0" and worker.port == 7001
    assert worker.discovery.advertise_address == f"{BOX_ADDRESS}:7001"
    # Mutual TLS for gRPC and Redis over TLS with its own certificate and user.
    assert worker.tls.enabled and str(worker.tls.client_ca).endswith("/ca.crt")
    assert worker.redis_url == f"rediss://worker-box1@{REDIS_ADDRESS}:6379/0"
    assert str(worker.discovery.ca_file).endswith("/ca.crt")
    assert str(worker.discovery.cert_file).endswith("/worker-box1.crt")
    assert str(worker.discovery.key_file).endswith("/worker-box1.key")


def test_the_appliance_host_issues_the_box_worker_s_certificate_and_redis_s(played):
    data = json.loads((played / "main/links.json").read_text())
    leaves = {leaf["name"]: leaf for leaf in data["leaves"]}
    assert leaves["worker-box1"]["remote"] == "box"
    assert BOX_ADDRESS in leaves["worker-box1"]["hosts"]
    assert leaves["redis"]["owner"] == "redis" and REDIS_ADDRESS in leaves["redis"]["hosts"]
    assert "127.0.0.1" in leaves["redis"]["hosts"]
    assert data["links"]["box1"]["address"] == f"{BOX_ADDRESS}:7001"
    assert data["links"]["piper"]["remote"] == ""


def test_redis_is_tls_only_on_loopback_and_the_lan_address(played):
    conf = {
        line.split()[0]: line.split(None, 1)[1]
        for line in (played / "main/redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert conf["bind"] == f"127.0.0.1 -::1 {REDIS_ADDRESS}"
    assert conf["port"] == "0" and conf["tls-port"] == "6379" and conf["tls-auth-clients"] == "yes"


def test_the_orchestrator_reaches_redis_over_tls_and_lists_the_box_worker(played, monkeypatch):
    env = {**_env(played / "main/redis.env"), **_env(played / "main/orchestrator.env")}
    orchestrator = _settings(monkeypatch, OrchestratorSettings, "orchestrator.toml", env)
    assert orchestrator.redis_url == "rediss://orchestrator@127.0.0.1:6379/0"
    assert str(orchestrator.discovery.cert_file).endswith("/orchestrator.crt")
    assert orchestrator.workers == ["127.0.0.1:7001", f"{BOX_ADDRESS}:7001"]
    assert orchestrator.tls.ca is not None


def test_a_worker_name_used_on_both_hosts_stops_the_run_naming_it(tmp_path):
    proc = _run(
        tmp_path,
        {"main": {}},
        {
            "tts_hosts": {
                "hosts": {
                    "box": {"appliance_tts_workers": [{"name": "piper", "port": 7001, "metrics_port": 9101}]}
                }
            }
        },
    )
    assert proc.returncode != 0
    assert "a worker's name is unique across all hosts" in proc.stdout and "piper, piper" in proc.stdout
