"""``appliance redis-acl``: Redis ACL users for the discovery registry, one per role.

A worker's user may write (SET with a TTL, DEL) only its own record key and PUBLISH only on the
workers channel; the orchestrator's user may only read records (SCAN, MGET, GET) and SUBSCRIBE to
that channel; the default user is turned off. Passwords go in as sha256 digests (``#…``), so the
file holds no secret. Load it with ``aclfile /etc/redis/users.acl`` in redis.conf; each service then
connects as its user: ``redis_url = "redis://worker-NAME@HOST:6379/0"`` and its password file.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance import discovery

# What redis-py may send on connecting, whatever the role (SELECT for a db other than 0).
_CONNECT = "+ping +hello +auth +select +client|setname"  # CLIENT SETINFO (7.2+): its refusal is ignored


@dataclass(frozen=True)
class AclUser:
    name: str
    password: str
    keys: str  # ACL key patterns, e.g. "~appliance:worker:10.0.0.5:7001"
    channels: str
    commands: str

    def line(self) -> str:
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return (
            f"user {self.name} on #{digest} resetkeys {self.keys} resetchannels {self.channels} "
            f"-@all {_CONNECT} {self.commands}"
        )


def _literal(key: str) -> str:
    """``key`` as an ACL key pattern matching only itself: an IPv6 address's brackets would
    otherwise be a glob character class (``[::1]`` matching any one of ``:`` and ``1``)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", key)


def worker_user(name: str, password: str, address: str, prefix: str = "appliance:") -> AclUser:
    discovery.split_host_port(address)
    return AclUser(
        f"worker-{name}",
        password,
        f"~{_literal(discovery.worker_key(prefix, address))}",
        f"&{discovery.channel(prefix)}",
        "+set +del +publish",
    )


def orchestrator_user(password: str, prefix: str = "appliance:", name: str = "orchestrator") -> AclUser:
    return AclUser(
        name,
        password,
        f"%R~{discovery.key_pattern(prefix)}",
        f"&{discovery.channel(prefix)}",
        "+scan +mget +get +subscribe +unsubscribe",
    )


def acl_file(users: list[AclUser]) -> str:
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise ValueError(f"user names must differ: {', '.join(names)}")
    return "\n".join(["user default off", *(u.line() for u in users)]) + "\n"


def _password(path: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"password file {path}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"password file {path} is empty")
    return text.splitlines()[0].strip()


def _worker_arg(value: str) -> tuple[str, str, str]:
    name, sep, rest = value.partition("=")
    address, sep2, password_file = rest.rpartition(",")
    if not sep or not sep2 or not name or not address:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=HOST:PORT,PASSWORD_FILE")
    try:
        discovery.split_host_port(address)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, address, password_file


def cmd_redis_acl(args: argparse.Namespace) -> int:
    try:
        users = [orchestrator_user(_password(args.orchestrator_password_file), args.prefix)]
        users += [worker_user(n, _password(f), a, args.prefix) for n, a, f in args.worker]
        text = acl_file(users)
    except ValueError as exc:
        print(f"appliance redis-acl: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "redis-acl", help="Redis ACL users for discovery: one per worker, one for the orchestrator"
    )
    p.add_argument("--prefix", default="appliance:", help="the discovery key prefix (default: appliance:)")
    p.add_argument("--orchestrator-password-file", required=True, metavar="FILE")
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        type=_worker_arg,
        metavar="NAME=HOST:PORT,PASSWORD_FILE",
        help="a worker, the address it advertises and its password file (repeat)",
    )
    p.add_argument("--out", help="write the ACL file here (default: standard output)")
    p.set_defaults(func=cmd_redis_acl)
