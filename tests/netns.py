"""Another host, as far as the network can tell: a network namespace joined to this one by a veth
pair, each end with its own address on a /30."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class OtherHost:
    ns: str  # the namespace's name (`ip netns exec NS …`; /run/netns/NS)
    address: str  # its address
    ours: str  # this namespace's address on the pair

    @property
    def path(self) -> str:
        return f"/run/netns/{self.ns}"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextmanager
def other_host(tag: str, subnet: int) -> Iterator[OtherHost]:
    """``tag``: a short word in the names (interface names are at most 15 characters);
    ``subnet``: the third octet of 10.213.X.0/30 (distinct per user in one test session)."""
    n = os.getpid() % 1000
    ns, here, there = f"appl-{tag}-{os.getpid()}", f"ap{tag[:4]}o{n}", f"ap{tag[:4]}w{n}"
    ours, theirs = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        _run("ip", "link", "set", there, "netns", ns)
        _run("ip", "addr", "add", f"{ours}/30", "dev", here)
        _run("ip", "link", "set", here, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{theirs}/30", "dev", there)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield OtherHost(ns=ns, address=theirs, ours=ours)
    finally:
        subprocess.run(["ip", "link", "del", here], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
