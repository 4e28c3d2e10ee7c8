"""The gRPC link between the orchestrator and its workers: TLS from the appliance's own CA
(``appliance certs``), optionally mutual. A worker serves TLS when it has a certificate; the
orchestrator dials TLS when it has the CA, and refuses plaintext to a worker off loopback."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from appliance.config.base import _Section


def _pair(cert: Path | None, key: Path | None, what: str) -> None:
    if (cert is None) != (key is None):
        raise ValueError(f"{what}: cert and key go together (one of them is set, the other is not)")


class WorkerTlsSettings(_Section):
    cert: Path | None = Field(None, description="PEM certificate the worker serves (absent: plaintext gRPC)")
    key: Path | None = Field(None, description="PEM private key of that certificate")
    client_ca: Path | None = Field(
        None, description="PEM CA: clients must present a certificate it signed (mutual TLS)"
    )

    @model_validator(mode="after")
    def _complete(self) -> WorkerTlsSettings:
        _pair(self.cert, self.key, "[tls]")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("[tls] client_ca (mutual TLS) needs the worker's own cert and key")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None


class WorkerLinkTlsSettings(_Section):
    ca: Path | None = Field(
        None, description="PEM CA that signed the workers' certificates (absent: plaintext gRPC)"
    )
    cert: Path | None = Field(None, description="client certificate, for workers that ask for one (mTLS)")
    key: Path | None = Field(None, description="private key of the client certificate")
    loopback: bool = Field(False, description="TLS to workers on loopback too (absent: plaintext there)")
    allow_plaintext: bool = Field(
        False, description="dial workers off loopback without TLS (warned about at every start)"
    )

    @model_validator(mode="after")
    def _complete(self) -> WorkerLinkTlsSettings:
        _pair(self.cert, self.key, "[tls]")
        if self.cert is not None and self.ca is None:
            raise ValueError("[tls] cert (a client certificate) needs ca, the CA of the workers")
        return self
