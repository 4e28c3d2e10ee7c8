"""The gpu role's detection, run for real on this machine (it only stats three paths): a forced kind
passes through; `auto` finds what this host has, and a CPU-only host is `none` with nothing changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_ansible import ANSIBLE, _playbook_bin

pytestmark = pytest.mark.skipif(
    _playbook_bin() is None, reason="ansible-playbook (ansible-core) is not installed"
)

PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.import_tasks: {detect}
"""


def _detect(tmp_path: Path, choice: str) -> tuple[str, dict]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(detect=ANSIBLE / "roles/gpu/tasks/detect.yml"))
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_LOCALHOST_WARNING": "false",
    }
    proc = subprocess.run(
        [
            _playbook_bin(),
            "-i",
            "localhost,",
            str(play),
            "-e",
            f"appliance_gpu={choice}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kind = re.search(r'"msg": "GPU: (\w+)', proc.stdout)
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)", proc.stdout)
    assert kind and recap, proc.stdout
    return kind.group(1), {"ok": int(recap.group(1)), "changed": int(recap.group(2))}


@pytest.mark.parametrize("forced", ["none", "nvidia", "jetson"])
def test_a_forced_kind_passes_through(tmp_path, forced):
    kind, recap = _detect(tmp_path, forced)
    assert kind == forced and recap["changed"] == 0


def test_auto_detects_this_host(tmp_path):
    kind, recap = _detect(tmp_path, "auto")
    if Path("/etc/nv_tegra_release").exists():
        expected = "jetson"
    elif Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists():
        expected = "nvidia"
    else:
        expected = "none"
    assert kind == expected and recap["changed"] == 0
