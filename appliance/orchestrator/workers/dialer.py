"""How the orchestrator dials a worker: TLS with the appliance's CA where configured, plaintext on
loopback, and no plaintext to a worker on another host unless the operator said so by name."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from appliance.config.base import ConfigError
from appliance.config.tls import WorkerLinkTlsSettings
from appliance.rpc.tls import TlsFileError, channel_credentials, is_loopback
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)


class PlaintextRefused(ConnectionError):
    """A worker off loopback that would be dialled without TLS."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"{address} is not on loopback and [tls] ca is not set: plaintext gRPC to another host is "
            "refused (give the orchestrator the appliance CA with [tls] ca, see `appliance certs`, or "
            "set [tls] allow_plaintext = true)"
        )
        self.address = address


class WorkerDialer:
    def __init__(self, tls: WorkerLinkTlsSettings | None = None) -> None:
        self.settings = tls or WorkerLinkTlsSettings()
        s = self.settings
        # Read once, at start: a missing or unreadable file is a start-up error naming it.
        try:
            self._credentials: grpc.ChannelCredentials | None = (
                channel_credentials(s.ca, s.cert, s.key) if s.ca is not None else None
            )
        except TlsFileError as exc:
            raise ConfigError(f"[tls]: {exc}") from None
        self._warned: set[str] = set()

    def credentials_for(self, address: str) -> grpc.ChannelCredentials | None:
        """The credentials to dial ``address`` with (None: plaintext); raises PlaintextRefused."""
        local = is_loopback(address)
        if self._credentials is not None and (not local or self.settings.loopback):
            return self._credentials
        if local:
            return None
        if not self.settings.allow_plaintext:
            raise PlaintextRefused(address)
        if address not in self._warned:
            self._warned.add(address)
            log.warning("plaintext gRPC to worker=%s on another host ([tls] allow_plaintext = true)", address)
        return None

    def dial(self, address: str, options: Iterable[tuple[str, int | str]] = ()) -> TTSClient:
        return TTSClient(address, options, self.credentials_for(address))
