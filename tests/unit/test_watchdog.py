from __future__ import annotations

import os

from appliance.systemd import Notifier, Watchdog, watchdog_interval
from appliance.tts.adapters import SynthesisTracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        self.enabled = True
        self.sent: list[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)


def test_pings_stop_while_a_synthesis_is_stuck_and_resume_after():
    clock = FakeClock()
    tracker = SynthesisTracker(clock)
    notifier = RecordingNotifier()
    health = []
    dog = Watchdog(
        notifier,
        interval=1,
        stuck_limit_s=10,
        oldest_synthesis_age=tracker.oldest_age,
        status=lambda: "models: x",
        on_health=health.append,
    )
    assert dog.tick() and notifier.sent.count("WATCHDOG=1") == 1
    token = tracker.begin()
    clock.now += 9.9
    assert dog.tick() and notifier.sent.count("WATCHDOG=1") == 2  # slow but not stuck
    clock.now += 0.2
    assert not dog.tick() and notifier.sent.count("WATCHDOG=1") == 2  # stuck: no ping
    clock.now += 30
    assert not dog.tick() and notifier.sent.count("WATCHDOG=1") == 2
    tracker.end(token)
    assert dog.tick() and notifier.sent.count("WATCHDOG=1") == 3
    assert health == [True, True, False, False, True]
    assert "STATUS=models: x" in notifier.sent


def test_tracker_reports_the_oldest_call():
    clock = FakeClock()
    tracker = SynthesisTracker(clock)
    assert tracker.oldest_age() == 0
    a = tracker.begin()
    clock.now += 5
    b = tracker.begin()
    clock.now += 1
    assert tracker.oldest_age() == 6 and tracker.in_flight == 2
    tracker.end(a)
    assert tracker.oldest_age() == 1
    tracker.end(b)
    assert tracker.oldest_age() == 0 and tracker.in_flight == 0


def test_silent_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready("x")
    n.watchdog()  # no socket, no error


def test_watchdog_interval_from_systemd_env(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval(default=5) == 5
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert watchdog_interval() == 10
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval(default=None) is None  # meant for another process
