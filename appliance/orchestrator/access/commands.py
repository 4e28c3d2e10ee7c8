"""``appliance access show|rotate [--config FILE]``: print the access secret and the pairing link, or
replace the secret (which unpairs every browser: their cookies were signed with the old one; a
running orchestrator reads the new file at the next request)."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/appliance/orchestrator.toml")


def _store(args: argparse.Namespace):
    from appliance.config import OrchestratorSettings, load_settings
    from appliance.orchestrator.access.secret import SecretStore, default_secret_file

    config = args.config or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None)
    settings = load_settings(OrchestratorSettings, config)
    return SecretStore(settings.access.secret_file or default_secret_file()), settings


def cmd_access(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    try:
        if args.action == "rotate":
            secret = store.rotate()
            print(secret)
            print(f"new access secret in {store.path}: every paired device must pair again", file=sys.stderr)
            return 0
        created = not store.path.exists()
        secret = store.get(create=True)
    except PermissionError as exc:
        print(
            f"appliance: cannot read or write {exc.filename}: run as root or the appliance user",
            file=sys.stderr,
        )
        return 1
    print(secret)
    if created:
        print(f"(a new access secret, written to {store.path})", file=sys.stderr)
    if settings.access.enabled is False:
        print("note: [access] enabled = false: the secret is not asked for", file=sys.stderr)
    host = args.host or f"{socket.gethostname()}.local"
    link = f"https://{host}/trust#secret={secret}"
    print(f"pairing link: {link}", file=sys.stderr)
    if args.qr:
        import segno

        segno.make(link, error="m").terminal(out=sys.stderr, compact=True)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("access", help="the access secret: show it (and the pairing link) or rotate it")
    p.add_argument("action", choices=["show", "rotate"])
    p.add_argument("--config", help=f"orchestrator TOML (default: {DEFAULT_CONFIG} if it exists)")
    p.add_argument("--host", help="the name or address in the pairing link (default: HOSTNAME.local)")
    p.add_argument("--qr", action="store_true", help="also print the pairing link as a QR code")
    p.set_defaults(func=cmd_access)
