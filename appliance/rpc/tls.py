"""gRPC credentials from PEM files, and which addresses are on loopback.

A file that cannot be read is a ``TlsFileError`` naming it, so a service fails at start with the path
and the reason, not later with a handshake error."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from appliance.discovery import split_host_port

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


class TlsFileError(OSError):
    pass


def read_pem(path: Path | str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsFileError(f"the {what} {path} is not PEM (no -----BEGIN line)")
    return data


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    pair = (read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=read_pem(client_ca, "client CA"), require_client_auth=True
    )


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, "CA certificate"),
        private_key=read_pem(key, "TLS client key") if key is not None else None,
        certificate_chain=read_pem(cert, "TLS client certificate") if cert is not None else None,
    )


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT (or [IPv6]:PORT) names this machine by a loopback address or name."""
    return is_loopback_host(split_host_port(address)[0])


def is_loopback_host(host: str) -> bool:
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere
