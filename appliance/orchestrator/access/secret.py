"""The access secret: one file, 0600, read again whenever it changes (so `appliance access rotate`
takes effect on a running service), and the pairing cookie signed with it (so rotating the secret
ends every cookie)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path

SYSTEM_SECRET_FILE = Path("/etc/appliance/access_secret")
COOKIE_VERSION = "v1"


def default_secret_file() -> Path:
    if SYSTEM_SECRET_FILE.exists():
        return SYSTEM_SECRET_FILE
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "appliance" / "access_secret"


def new_secret() -> str:
    """Five groups of four base-32 letters and digits (100 bits): typeable on a phone."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode().lower()
    return "-".join(raw[i : i + 4] for i in range(0, 20, 4))


def normalise(candidate: str) -> str:
    """What a person typed, as the secret is written: case, spaces and dashes do not matter."""
    s = "".join(c for c in candidate.lower() if c.isalnum())
    return "-".join(s[i : i + 4] for i in range(0, len(s), 4)) if len(s) == 20 else candidate.strip()


def write_secret(path: Path, secret: str) -> None:
    """Replace the file at once (never half-written), 0600, keeping its owner when root rewrites it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".access_secret.")
    try:
        os.fchmod(fd, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SecretStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._secret: str | None = None

    def get(self, create: bool = True) -> str:
        """The secret; made (and logged by the caller) when the file does not exist yet."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if not create:
                raise
            write_secret(self.path, new_secret())
            st = self.path.stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._seen or self._secret is None:
            text = self.path.read_text().strip()
            if not text:
                raise ValueError(f"{self.path} is empty: `appliance access rotate` writes a new secret")
            self._secret, self._seen = text, stamp
        return self._secret

    def rotate(self) -> str:
        secret = new_secret()
        write_secret(self.path, secret)
        return secret

    def matches(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(normalise(candidate).encode(), self.get().encode())

    # --- the pairing cookie: issued time and a MAC over it with a key derived from the secret ---

    def _mac(self, issued: str) -> str:
        key = hashlib.sha256(b"appliance pairing cookie\0" + self.get().encode()).digest()
        return hmac.new(key, f"{COOKIE_VERSION}.{issued}".encode(), hashlib.sha256).hexdigest()

    def cookie(self, now: float | None = None) -> str:
        issued = str(int(now if now is not None else time.time()))
        return f"{COOKIE_VERSION}.{issued}.{self._mac(issued)}"

    def cookie_valid(self, value: str | None, max_age_s: float, now: float | None = None) -> bool:
        if not value:
            return False
        version, _, rest = value.partition(".")
        issued, _, mac = rest.partition(".")
        if version != COOKIE_VERSION or not issued.isdigit():
            return False
        age = (now if now is not None else time.time()) - int(issued)
        return -300 <= age <= max_age_s and hmac.compare_digest(mac.encode(), self._mac(issued).encode())
