"""Bearer API keys for the OpenAI-compatible API: only their sha256 digests are configured
(``[api] keys_sha256``), so the configuration file holds nothing a reader could use.

A request needs a key whose digest is listed, except — with ``[api] loopback_without_key = true``
only — one made from the machine itself straight to the orchestrator. A request that came through
a proxy (Caddy on the same box adds ``X-Forwarded-For``) is never taken for a local one."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from appliance.config import ApiSettings

KEY_PREFIX = "sk-appliance-"
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyCheck:
    def __init__(self, settings: ApiSettings) -> None:
        self.digests = [bytes.fromhex(d) for d in settings.keys_sha256]
        self.loopback_without_key = settings.loopback_without_key

    def allows(self, remote: str | None, headers) -> bool:
        if self.loopback_without_key and remote in LOOPBACK and not any(h in headers for h in PROXY_HEADERS):
            return True
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        digest = hashlib.sha256(token.strip().encode()).digest()
        # Every digest is compared (no early exit): the time taken says nothing of which matched.
        return sum(hmac.compare_digest(digest, d) for d in self.digests) > 0
