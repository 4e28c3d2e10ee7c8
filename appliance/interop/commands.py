"""The interop commands: ``appliance wyoming`` (the Wyoming server) and ``appliance api-key``
(make a Bearer key for the /v1 API, or hash one, for ``[api] keys_sha256``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def cmd_wyoming(args: argparse.Namespace) -> int:
    from appliance.config import OrchestratorSettings, WyomingSettings, load_settings
    from appliance.interop.wyoming_server import WyomingService
    from appliance.logs import setup_logging

    overrides = {"redis_url": args.redis_url, "workers": args.worker}
    settings = load_settings(OrchestratorSettings, args.config, **overrides)
    update = {
        k: v for k, v in (("uri", args.uri), ("zeroconf", True if args.zeroconf else None)) if v is not None
    }
    if update:
        wyoming = WyomingSettings.model_validate({**settings.wyoming.model_dump(), **update})
        settings = settings.model_copy(update={"wyoming": wyoming})
    setup_logging(settings.log_level)

    async def serve() -> None:
        await WyomingService(settings).serve_forever()

    asyncio.run(serve())
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from appliance.interop.api_keys import hash_key, new_key

    if args.action == "new":
        key = new_key()
        print(json.dumps({"key": key, "sha256": hash_key(key)}))
        print("give the key to the client; put the sha256 in [api] keys_sha256", file=sys.stderr)
    else:
        key = args.key if args.key is not None else sys.stdin.readline().strip()
        print(hash_key(key))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "wyoming", help="serve the Wyoming protocol (Home Assistant) on the workers and the ASR"
    )
    p.add_argument("--config", help="the orchestrator's TOML, e.g. /etc/appliance/orchestrator.toml")
    p.add_argument(
        "--uri", help="tcp://HOST:PORT or unix://PATH (default: [wyoming] uri, tcp://127.0.0.1:10200)"
    )
    p.add_argument("--zeroconf", action="store_true", help="advertise _wyoming._tcp over mDNS")
    p.add_argument("--redis-url", help="discover workers in Redis (absent: the static worker list)")
    p.add_argument(
        "--worker", action="append", metavar="HOST:PORT", help="a TTS worker (repeatable; replaces the list)"
    )
    p.set_defaults(func=cmd_wyoming)

    p = sub.add_parser(
        "api-key", help="a Bearer key for the /v1 API: `new` makes one, `hash` prints a key's sha256"
    )
    p.add_argument("action", choices=["new", "hash"])
    p.add_argument("key", nargs="?", help="the key to hash (absent: read from stdin)")
    p.set_defaults(func=cmd_api_key)
