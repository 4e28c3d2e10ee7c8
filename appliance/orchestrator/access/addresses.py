"""Who a request comes from and which names are the appliance's own.

Caddy on the same box proxies to the orchestrator on loopback and says who the client was in
``X-Forwarded-For`` (it sets that header itself, so a client cannot forge the last entry). A request
is *local* only when it reached the orchestrator straight from this machine, with no proxy header."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_local(remote: str | None, headers) -> bool:
    return is_loopback(remote) and not any(h in headers for h in PROXY_HEADERS)


def client_address(remote: str | None, headers) -> str:
    """The client's address: the proxy's last ``X-Forwarded-For`` entry when the proxy is on loopback."""
    if is_loopback(remote):
        forwarded = headers.get("X-Forwarded-For", "")
        last = forwarded.rpartition(",")[2].strip()
        if last:
            return last
    return remote or "?"


def came_over_tls(request) -> bool:
    if request.secure:
        return True
    return is_loopback(request.remote) and request.headers.get("X-Forwarded-Proto", "") == "https"


def lan_addresses() -> set[str]:
    """This machine's own addresses (IPv4 from /proc/net/fib_trie, IPv6 from /proc/net/if_inet6)."""
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in itertools.pairwise(lines):
            if line.strip() == "/32 host LOCAL":
                found.add(prev.strip().removeprefix("|-- "))
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    try:
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return found


def own_names(extra_hosts: list[str] | None = None) -> set[str]:
    """Every host name the appliance's page can legitimately be served under, lower case."""
    host = socket.gethostname().lower()
    names = {host, f"{host}.local", socket.getfqdn().lower(), *LOOPBACK_NAMES}
    names.update(lan_addresses())
    names.update(h.lower() for h in extra_hosts or ())
    return {n.strip("[]") for n in names if n}


def origin_host(origin: str) -> str:
    return (urlsplit(origin).hostname or "").lower()
