"""A last resort for a test that its timeout cannot stop.

pytest-timeout's signal method raises inside whatever Python code runs when the alarm fires. Under
asyncio that may be a callback, whose exception the event loop logs and swallows, or the test may
be blocked in native code (the LiveKit SDK, onnxruntime) that never returns to Python: the suite
then hangs until CI's own limit, with nothing to say where. This timer fires a while after the
test's timeout, writes every thread's stack and the test's id, and ends the run, so a hang is a
failure that names itself within minutes."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading

import pytest

# Beyond the test's own timeout: time for pytest-timeout to act first.
GRACE_S = float(os.environ.get("APPLIANCE_TEST_HANG_GRACE_S", "120"))


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def _hung(item: pytest.Item, after_s: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the test's output is captured: write where the run's output goes
        capture.suspend_global_capture(in_=True)
    nodeid = item.nodeid
    sys.stderr.write(
        f"\n\n!!! hang: {nodeid} still running {after_s:.0f} s after it started; its timeout did "
        "not stop it. Every thread's stack follows, then the run ends.\n"
    )
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(70)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    limit = _limit(item)
    if limit <= 0:
        yield
        return
    timer = threading.Timer(limit + GRACE_S, _hung, args=(item, limit + GRACE_S))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
