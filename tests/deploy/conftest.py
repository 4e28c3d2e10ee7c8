"""Deploy tier: the real playbook against a real systemd host (a systemd-nspawn container).

Skips with the reason where this host cannot do it (not root, tools missing, no ansible-playbook).
Figures (install, rerun, boot times) go to .artifacts/deploy/figures.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from container import missing_requirements
from deployment import FIGURES, Deployment, ansible_playbook, bundle_for_session, site_playbook
from livekit_server import GoMissing, livekit_binary

_STARTED = time.time()


def _why_skip() -> str | None:
    why = missing_requirements()
    if why:
        return why
    if ansible_playbook() is None:
        return "no ansible-playbook (pip install -e '.[test]' installs ansible-core)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _why_skip()
    skip = pytest.mark.skip(reason=f"deploy tests: {why}")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            # The first test also pays for the bundle, the debootstrap and the fresh install.
            item.add_marker(pytest.mark.timeout(2400))
            if why:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def livekit_binary_for_the_bundle():
    """The livekit-server the LiveKit tests use (built from its Go module), or None without Go."""
    try:
        return livekit_binary()
    except GoMissing:
        return None


@pytest.fixture(scope="session")
def bundle_tar(tmp_path_factory, livekit_binary_for_the_bundle):
    out = tmp_path_factory.mktemp("bundle")
    tar = bundle_for_session(out, livekit_binary_for_the_bundle)
    yield tar
    if out in tar.parents:  # built here (not APPLIANCE_DEPLOY_BUNDLE): 400 MB not worth keeping
        tar.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    """A freshly booted bookworm container reachable over ssh (nothing installed yet)."""
    dep = Deployment(tmp_path_factory.mktemp("offline"), name="appl-offline", mode="offline", bundle=None)
    try:
        dep.boot()
        yield dep
    finally:
        dep.teardown()


@pytest.fixture(scope="module")
def offline(booted, request):
    """The same container with the appliance installed from the offline bundle by site.yml, with
    gRPC over mutual TLS on (its worker is on loopback: the orchestrator dials it over TLS too) and,
    where this host can build livekit-server, the livekit role on."""
    if not site_playbook().exists():
        pytest.skip(f"no {site_playbook()} yet")
    if booted.install_run is None:
        booted.bundle = request.getfixturevalue("bundle_tar")
        booted.extra_vars["appliance_grpc_tls"] = True
        booted.livekit = request.getfixturevalue("livekit_binary_for_the_bundle") is not None
        booted.extra_vars["appliance_livekit"] = booted.livekit
        booted.write_inventory()
        booted.install()
    return booted


def pytest_terminal_summary(terminalreporter):
    if FIGURES.exists() and FIGURES.stat().st_mtime > _STARTED:
        terminalreporter.section("deploy figures (.artifacts/deploy/figures.json)")
        terminalreporter.write_line(FIGURES.read_text().strip())
