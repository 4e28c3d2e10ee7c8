"""`appliance bundle --livekit`: which livekit-server the bundle carries, from a binary or a release
archive, refused when it is for another architecture or is no executable at all."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from appliance.offline_debs import BundleError
from appliance.offline_livekit import elf_arch, find_server, stage_server, target_arch

ROOT = Path(__file__).resolve().parents[2]


def _elf(path: Path, machine: int) -> Path:
    """An ELF header (64-bit, little-endian) for ``machine``, then padding: enough for the check."""
    head = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(head + b"\x00" * 64)
    return path


def test_the_architecture_is_read_from_the_elf_header(tmp_path):
    assert elf_arch(_elf(tmp_path / "a", 62)) == "amd64"
    assert elf_arch(_elf(tmp_path / "b", 183)) == "arm64"
    (tmp_path / "c").write_text("#!/bin/sh\n")
    assert elf_arch(tmp_path / "c") is None
    assert target_arch("manylinux_2_35_aarch64") == "arm64" and target_arch("manylinux2014_x86_64") == "amd64"


def test_a_release_archive_gives_its_binary_and_version(tmp_path):
    binary = _elf(tmp_path / "livekit-server", {"amd64": 62, "arm64": 183}[target_arch(None)])
    archive = tmp_path / f"livekit_1.9.11_linux_{target_arch(None)}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, arcname="livekit-server")
        tar.add(ROOT / "README.md", arcname="README.md")
    entry = stage_server(str(archive), ROOT, tmp_path / "stage", None)
    staged = tmp_path / "stage/livekit/livekit-server"
    assert entry["version"] == "1.9.11" and entry["file"] == "livekit/livekit-server"
    assert staged.read_bytes() == binary.read_bytes() and entry["size"] == binary.stat().st_size
    assert staged.stat().st_mode & 0o111


def test_another_architecture_or_no_executable_is_refused(tmp_path):
    other = 183 if target_arch(None) == "amd64" else 62
    with pytest.raises(BundleError, match="livekit-server for"):
        stage_server(str(_elf(tmp_path / "x", other)), ROOT, tmp_path / "s1", None)
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(BundleError, match="no known architecture"):
        stage_server(str(tmp_path / "script"), ROOT, tmp_path / "s2", None)
    with pytest.raises(BundleError, match="--livekit .*: no such file"):
        find_server(str(tmp_path / "missing"), ROOT)


def test_livekit_server_names_what_it_pointed_at(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEKIT_SERVER", str(tmp_path / "gone"))
    with pytest.raises(BundleError, match=r"\$LIVEKIT_SERVER .*gone: no such file"):
        find_server(None, ROOT)


def test_a_real_binary_reports_its_version(tmp_path):
    """The binary the LiveKit tests build (skipped where none was built: no Go)."""
    cached = sorted(Path("/var/cache/appliance-livekit").glob("v*/livekit-server"))
    if not cached:
        pytest.skip("no livekit-server built on this host (scripts/build-livekit-server.sh)")
    entry = stage_server(str(cached[-1]), ROOT, tmp_path, None)
    assert entry["version"] == cached[-1].parent.name.lstrip("v")


def test_the_bundle_records_the_digest_the_role_checks(tmp_path):
    from appliance.offline_bundle import build_bundle, sha256

    binary = _elf(tmp_path / "livekit-server", {"amd64": 62, "arm64": 183}[target_arch(None)])
    archive = tmp_path / f"livekit_1.9.11_linux_{target_arch(None)}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, arcname="livekit-server")
    out = build_bundle(
        tmp_path / "out", tree=ROOT, wheels=False, debs=False, livekit=True, livekit_server=str(archive)
    )
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    top = next((tmp_path / "x").iterdir())
    entry = json.loads((top / "manifest.json").read_text())["livekit"]
    assert entry["version"] == "1.9.11" and entry["sha256"] == sha256(top / entry["file"]) == sha256(binary)
