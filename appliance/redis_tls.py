"""How a service reaches Redis: ``rediss://`` verified against the appliance's own CA where one is
configured (optionally with a client certificate, for a Redis with ``tls-auth-clients``), plaintext
on loopback or a Unix socket, and no plaintext to a Redis on another host unless the operator turned
that on by name. Files are read at start, so a missing one is a start-up error naming it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from appliance.rpc.tls import TlsFileError, is_loopback_host, read_pem

if TYPE_CHECKING:
    from appliance.config.base import _RedisSection

log = logging.getLogger(__name__)


class RedisPlaintextRefused(ValueError):
    """A ``redis://`` URL to a host off loopback, with plaintext not allowed."""


@dataclass(frozen=True)
class RedisTls:
    """The TLS side of one service's Redis settings (the ``[discovery]`` section's fields)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_plaintext: bool = False

    @classmethod
    def of(cls, section: _RedisSection) -> RedisTls:
        return cls(section.ca_file, section.cert_file, section.key_file, section.allow_plaintext)

    def connect_kwargs(self, url: str) -> dict:
        """redis-py keywords for ``url``; raises ValueError (a bad combination, an unreadable file)
        and RedisPlaintextRefused."""
        parts = urlsplit(url)
        if parts.scheme == "rediss":
            return self._tls_kwargs()
        if self.ca_file is not None or self.cert_file is not None:
            raise ValueError(
                f"[discovery] ca_file/cert_file are for TLS, but the Redis URL is {parts.scheme}:// "
                "(use rediss://HOST:PORT/DB, or remove them)"
            )
        if parts.scheme == "redis" and not is_loopback_host(parts.hostname or "127.0.0.1"):
            if not self.allow_plaintext:
                raise RedisPlaintextRefused(
                    f"Redis at {parts.hostname} is not on loopback and its URL is redis:// (plaintext): "
                    "refused (use rediss:// with [discovery] ca_file, the appliance CA, or set "
                    "[discovery] allow_plaintext = true)"
                )
            log.warning(
                "plaintext Redis to %s on another host ([discovery] allow_plaintext = true)", parts.hostname
            )
        return {}

    def _tls_kwargs(self) -> dict:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("[discovery] cert_file and key_file go together (one is set, the other is not)")
        try:
            # Read now: redis-py would only fail at the first connection, with an SSL error.
            if self.ca_file is not None:
                read_pem(self.ca_file, "Redis CA certificate")
            if self.cert_file is not None and self.key_file is not None:
                read_pem(self.cert_file, "Redis client certificate")
                read_pem(self.key_file, "Redis client key")
        except TlsFileError as exc:
            raise ValueError(f"[discovery]: {exc}") from None
        kwargs: dict = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.ca_file is not None:
            kwargs["ssl_ca_certs"] = str(self.ca_file)
        if self.cert_file is not None:
            kwargs["ssl_certfile"] = str(self.cert_file)
            kwargs["ssl_keyfile"] = str(self.key_file)
        return kwargs
