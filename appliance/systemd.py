"""systemd integration for both services (Type=notify units): READY/STATUS/STOPPING notifications
and a watchdog that pings only while the event loop turns (the ping is a task on that loop) and,
for the TTS worker, no synthesis call is stuck, so systemd restarts a hung service.

Everything is silent when NOTIFY_SOCKET is unset (not started by systemd)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = None
        if self.enabled:
            import sdnotify

            self._sd = sdnotify.SystemdNotifier()

    def send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def watchdog_interval(default: float | None = None) -> float | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC), when the watchdog is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return default
    try:
        return max(int(usec) / 2e6, 0.05)
    except ValueError:
        return default


class Watchdog:
    """Every ``interval`` seconds: ping if healthy, and refresh the STATUS line."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        interval: float,
        status: Callable[[], str],
        stuck_limit_s: float = float("inf"),
        oldest_synthesis_age: Callable[[], float] = lambda: 0.0,
        on_health: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self.notifier = notifier
        self.interval = interval
        self.stuck_limit_s = stuck_limit_s
        self._oldest = oldest_synthesis_age
        self._status = status
        self._on_health = on_health
        self.pings = 0
        self._was_healthy = True

    def healthy(self) -> bool:
        return self._oldest() < self.stuck_limit_s

    def tick(self) -> bool:
        ok = self.healthy()
        if ok:
            self.notifier.watchdog()
            self.pings += 1
        if ok != self._was_healthy:
            if ok:
                log.info("watchdog: synthesis unstuck, pings resume")
            else:
                log.error(
                    "watchdog: a synthesis call has run %.1fs (limit %.1fs); withholding WATCHDOG=1",
                    self._oldest(),
                    self.stuck_limit_s,
                )
            self._was_healthy = ok
        self._on_health(ok)
        self.notifier.status(self._status())
        return ok

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval)
