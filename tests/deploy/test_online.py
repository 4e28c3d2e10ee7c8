"""The real playbook, online mode: Debian packages from the mirror and wheels from PyPI, inside a
second container that has this host's name service and CA bundle. Only where both are reachable
(APPLIANCE_DEPLOY_ONLINE=0 skips it; =1 makes an unreachable network a failure, not a skip)."""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlparse

import pytest
from container import debian_mirror
from deployment import (
    Deployment,
    differences_from_the_checkout,
    healthz,
    site_playbook,
    ssl_context,
    wait_units_running,
)

from appliance.transport.ws_client import WsClient

RATE = 16000


def _unreachable() -> str | None:
    mirror = urlparse(debian_mirror())
    targets = [
        (mirror.hostname, mirror.port or (443 if mirror.scheme == "https" else 80)),
        ("pypi.org", 443),
        ("files.pythonhosted.org", 443),
    ]
    for host, port in targets:
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            return f"{host}:{port} unreachable ({exc})"
    return None


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    wanted = os.environ.get("APPLIANCE_DEPLOY_ONLINE", "auto")
    if wanted == "0":
        pytest.skip("APPLIANCE_DEPLOY_ONLINE=0")
    why = _unreachable()
    if why and wanted != "1":
        pytest.skip(f"online mode needs the mirrors: {why}")
    if not site_playbook().exists():
        pytest.skip(f"no {site_playbook()} yet")
    # No appliance_pip_spec: the playbook builds a wheel of this checkout on the controller and
    # installs it; every dependency and model package comes from PyPI, every Debian package from
    # the mirror.
    dep = Deployment(tmp_path_factory.mktemp("online"), name="appl-online", mode="online", bundle=None)
    try:
        dep.boot()
        dep.install()
        yield dep
    finally:
        dep.teardown()


def test_online_install_is_a_wheel_of_this_checkout(online):
    dist_info = next(
        online.container.path("opt/appliance/venv/lib").glob("python3*/site-packages/appliance-*.dist-info")
    )
    origin = json.loads((dist_info / "direct_url.json").read_text())["url"]
    assert origin.startswith("file:///opt/appliance/wheels/appliance-") and origin.endswith(".whl"), origin
    assert differences_from_the_checkout(online) == []


async def test_online_install_serves_a_turn_through_caddy(online):
    assert (
        online.container.run("systemctl", "is-active", "appliance.target", check=False).stdout.strip()
        == "active"
    )
    states = wait_units_running(online, 60)
    assert all(s == ("active", "running") for s in states.values()), states
    assert healthz(online)[0] == 200
    client = WsClient(f"wss://localhost:{online.https_port}/ws", ssl=ssl_context(online))
    await client.connect(RATE, token=online.access_secret)
    try:
        await client.send_json({"type": "text", "text": "hello there"})
        await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
    finally:
        await client.close()
    assert client.rx.of_type("reply") and client.rx.frames
