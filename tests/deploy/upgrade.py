"""The next release, made from this checkout: a copy of the tree with the patch version raised, and
its offline bundle. Installing that bundle over an installed appliance is an upgrade, as an
operator would do it (`appliance bundle` on the new release, then `ansible-playbook site.yml`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from deployment import ROOT

_VERSION = re.compile(r'(?m)^version = "(\d+)\.(\d+)\.(\d+)"$')
# systemd's "Started UNIT." journal message (SD_MESSAGE_UNIT_STARTED), logged once per start.
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"


def next_release(dest: Path) -> tuple[Path, str]:
    """A copy of this checkout's files (tracked and untracked, what git does not ignore, and the
    page's built LiveKit client) at ``dest``, its version one patch release on; returns the tree
    and the new version."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    vendor = ROOT / "appliance/web/vendor"  # the page's LiveKit client, built at install time
    if vendor.is_dir():
        shutil.copytree(vendor, dest / "appliance/web/vendor")
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    found = _VERSION.search(text)
    assert found, 'no version = "X.Y.Z" in pyproject.toml'
    major, minor, patch = found.groups()
    version = f"{major}.{minor}.{int(patch) + 1}"
    pyproject.write_text(text[: found.start()] + f'version = "{version}"' + text[found.end() :])
    return dest, version


def starts_since(container, since_epoch: int) -> dict[str, int]:
    """How many times each unit was started since ``since_epoch`` (the container's journal)."""
    out = container.run(
        "journalctl", "--no-pager", "-o", "json", f"MESSAGE_ID={UNIT_STARTED}", f"--since=@{since_epoch}"
    ).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        unit = json.loads(line).get("UNIT")
        if unit:
            counts[unit] = counts.get(unit, 0) + 1
    return counts


def files_with_identity(container, directory: str) -> list[str]:
    """Every file under ``directory``: path, inode, size and modification time (a rewrite shows)."""
    out = container.run("find", directory, "-type", "f", "-printf", r"%P %i %s %T@\n").stdout
    return sorted(out.splitlines())
