"""The Debian side of the offline bundle: a package list's whole dependency closure, downloaded with
this host's apt lists and made a flat apt repository the device installs from.

A bottom-layer module: it imports nothing from the rest of the package.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path


class BundleError(RuntimeError):
    pass


def run_checked(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise BundleError(
            f"{' '.join(cmd[:6])} … failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


# `apt-cache depends` without these: only what must be installed.
_DEPENDS_FLAGS = (
    "--recurse",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
)


# A pip platform tag's machine -> Debian's architecture name.
_DPKG_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}


def dpkg_arch(platform: str) -> str | None:
    """Debian's name for the machine of a pip platform tag (manylinux2014_aarch64 -> arm64)."""
    return next((arch for machine, arch in _DPKG_ARCH.items() if platform.endswith(machine)), None)


def host_release() -> dict[str, str]:
    info = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        k, _, v = line.partition("=")
        info[k] = v.strip('"')
    arch = run_checked(["dpkg", "--print-architecture"]).stdout.strip()
    return {"id": info.get("ID", ""), "release": info.get("VERSION_CODENAME", ""), "arch": arch}


def _apt_opts(status: Path) -> list[str]:
    # This host's sources and lists, but an empty dpkg status: the closure is what a bare system needs.
    return ["-o", f"Dir::State::status={status}", "-o", "APT::Sandbox::User=root"]


def parse_depends(output: str) -> list[str]:
    """Package names from `apt-cache depends --recurse` output (virtual ones, ``<x>``, dropped)."""
    names = []
    for line in output.splitlines():
        if not line or line[0].isspace() or line.startswith("<"):
            continue
        name = line.strip().split(":")[0]
        if name not in names:
            names.append(name)
    return names


def apt_closure(packages: Iterable[str], status: Path) -> list[str]:
    out = run_checked(["apt-cache", *_apt_opts(status), "depends", *_DEPENDS_FLAGS, *packages]).stdout
    return sorted(parse_depends(out))


def fetch_debs(packages: Iterable[str], dest: Path) -> list[Path]:
    """Download ``packages`` and their whole dependency closure into ``dest`` (apt-get download)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        status = Path(tmp) / "status"
        status.write_text("")
        names = apt_closure(packages, status)
        # Names without a candidate version (pure virtual ones apt-cache still printed) are skipped.
        policy = run_checked(["apt-cache", *_apt_opts(status), "policy", *names]).stdout
        missing = set(
            re.findall(r"^(\S+):\n\s+Installed: \(none\)\n\s+Candidate: \(none\)", policy, re.MULTILINE)
        )
        names = [n for n in names if n not in missing]
        run_checked(["apt-get", *_apt_opts(status), "download", *names], cwd=dest)
    return sorted(dest.glob("*.deb"))


def index_debs(debs_dir: Path) -> None:
    """Make ``debs_dir`` a flat apt repository: Packages, Packages.gz and (with apt-utils) Release."""
    packages = run_checked(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=debs_dir).stdout
    (debs_dir / "Packages").write_text(packages)
    with gzip.open(debs_dir / "Packages.gz", "wt") as f:
        f.write(packages)
    if shutil.which("apt-ftparchive"):
        release = run_checked(["apt-ftparchive", "release", "."], cwd=debs_dir).stdout
        (debs_dir / "Release").write_text(release)


def deb_fields(deb: Path) -> dict[str, str]:
    out = run_checked(
        ["dpkg-deb", "--show", "--showformat=${Package}\t${Version}\t${Architecture}", str(deb)]
    ).stdout
    name, version, arch = out.split("\t")
    return {"package": name, "version": version, "arch": arch}
