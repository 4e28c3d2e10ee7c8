"""The harness itself: a booted systemd container that Ansible reaches over ssh."""

from __future__ import annotations

from pathlib import Path


def test_container_runs_systemd_and_ansible_reaches_it(booted, tmp_path):
    c = booted.container
    assert c.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
    assert c.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    play = tmp_path / "ping.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: true\n  tasks:\n"
        "    - ansible.builtin.ping:\n"
        "    - ansible.builtin.copy: {dest: /root/harness-was-here, content: ok}\n"
        "    - ansible.builtin.assert: {that: [ansible_facts.distribution_release == 'bookworm',"
        " ansible_facts.service_mgr == 'systemd']}\n"
    )
    run = booted.playbook(play, timeout=300, label="harness")
    assert run.returncode == 0 and run.recap.get("failed") == 0, run.tail()
    assert (c.path("root/harness-was-here")).read_text() == "ok"
    # Offline: the container has no name service, so nothing can quietly reach a mirror.
    assert c.run("getent", "hosts", "deb.debian.org", check=False).returncode != 0
