"""One log line per event, to stderr (journald adds its own timestamps under systemd)."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "info") -> None:
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journald
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for noisy in ("grpc", "asyncio", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
