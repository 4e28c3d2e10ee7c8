"""The livekit-server an offline bundle carries (`appliance bundle --livekit`).

Where the binary comes from, first that exists: the path given to ``--livekit``, a release archive
(``livekit_<version>_linux_<arch>.tar.gz``) or the binary itself; ``$LIVEKIT_SERVER``; the one
``scripts/build-livekit-server.sh`` built (its cache, keyed by version); ``livekit-server`` on PATH.
The bundle keeps it as ``livekit/livekit-server`` with its version and sha256 in the manifest; the
Ansible role ``livekit`` installs it from there and checks that digest.

A bottom-layer module: the standard library and :mod:`appliance.offline_debs`' error type only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from appliance.offline_debs import BundleError

# ELF e_machine of the architectures a bundle targets (the Debian names the manifest records).
_ELF_MACHINES = {62: "amd64", 183: "arm64"}
_DEBIAN_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def elf_arch(binary: Path) -> str | None:
    """The Debian architecture of an ELF executable, None where it is not one we know."""
    with binary.open("rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order))


def target_arch(platform: str | None) -> str:
    """The Debian architecture of a pip platform tag (None: this host)."""
    if platform is None:
        return _DEBIAN_ARCH.get(os.uname().machine, os.uname().machine)
    return next((arch for machine, arch in _DEBIAN_ARCH.items() if platform.endswith(machine)), platform)


def server_version(binary: Path) -> str:
    """``livekit-server --version`` → "1.9.11" (for a binary this host can run)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BundleError(f"{binary} --version failed: {exc}") from None
    m = re.search(r"version\s+v?(\d+\.\d+\.\d+\S*)", out)
    if not m:
        raise BundleError(f"{binary} --version said {out.strip()!r}, not a livekit-server version")
    return m.group(1)


def _version_from_archive_name(name: str) -> str | None:
    m = re.match(r"livekit_v?(\d+\.\d+\.\d+[^_]*)_linux_", name)
    return m.group(1) if m else None


def _from_archive(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        member = next(
            (m for m in tar.getmembers() if Path(m.name).name == "livekit-server" and m.isfile()), None
        )
        if member is None:
            raise BundleError(f"{archive} holds no livekit-server")
        src = tar.extractfile(member)
        assert src is not None
        with src, dest.open("wb") as out:
            shutil.copyfileobj(src, out)
    return dest


def _built_by_the_script(tree: Path) -> Path | None:
    script = tree / "scripts" / "build-livekit-server.sh"
    if not script.exists() or not shutil.which("go"):
        return None
    done = subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BundleError(f"{script} failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _existing(path: str, named_by: str) -> Path:
    found = Path(path).expanduser()
    if not found.is_file():
        raise BundleError(f"{named_by} {path}: no such file (a livekit-server binary or release archive)")
    return found


def find_server(given: str | None, tree: Path) -> Path:
    """The binary (or release archive) to carry; a clear error where there is none."""
    if given:
        return _existing(given, "--livekit")
    if os.environ.get("LIVEKIT_SERVER"):
        return _existing(os.environ["LIVEKIT_SERVER"], "$LIVEKIT_SERVER")
    built = _built_by_the_script(tree)
    if built is not None:
        return built
    on_path = shutil.which("livekit-server")
    if on_path:
        return Path(on_path)
    raise BundleError(
        "--livekit: no livekit-server found (pass --livekit PATH to a binary or to the release archive "
        "livekit_<version>_linux_<arch>.tar.gz, set $LIVEKIT_SERVER, or install Go so that "
        "scripts/build-livekit-server.sh can build it)"
    )


def stage_server(given: str | None, tree: Path, stage: Path, platform: str | None) -> dict:
    """Copy livekit-server into ``stage/livekit/`` and return its manifest entry (the bundle adds
    its sha256, as for every file it carries)."""
    source = find_server(given, tree)
    (stage / "livekit").mkdir(parents=True, exist_ok=True)
    binary = stage / "livekit" / "livekit-server"
    archive_version = None
    if tarfile.is_tarfile(source):
        archive_version = _version_from_archive_name(source.name)
        _from_archive(source, binary)
    else:
        shutil.copyfile(source, binary)
    binary.chmod(0o755)
    want = target_arch(platform)
    arch = elf_arch(binary)
    if arch != want:
        raise BundleError(
            f"{source} is a livekit-server for {arch or 'no known architecture'}, the bundle is for {want}"
        )
    version = archive_version or (server_version(binary) if want == target_arch(None) else None)
    if version is None:
        raise BundleError(
            f"{source}: the version of a {want} binary cannot be read here; pass the release archive"
        )
    return {
        "file": "livekit/livekit-server",
        "version": version,
        "arch": arch,
        "size": binary.stat().st_size,
        "source": source.name,
    }
