"""The suite's hang watchdog (tests/hang_watchdog.py) ends a run whose test its timeout cannot stop,
naming the test and showing where it was stuck."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from hang_watchdog import pytest_runtest_protocol  # noqa: F401
"""

STUCK = """
import signal, time, pytest

@pytest.mark.timeout(1)
def test_fine():
    pass

@pytest.mark.timeout(1)
def test_stuck_where_no_timeout_reaches():
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # as if the timeout's exception were swallowed
    time.sleep(600)
"""


def test_a_test_its_timeout_cannot_stop_ends_the_run_with_its_stack(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_stuck.py").write_text(STUCK)
    env = {**os.environ, "APPLIANCE_TEST_HANG_GRACE_S": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 70, out
    assert "hang: test_stuck.py::test_stuck_where_no_timeout_reaches still running 2 s" in out
    assert "in test_stuck_where_no_timeout_reaches" in out  # the stuck thread's stack
    assert "test_fine" not in out.split("!!! hang")[1]  # only the stuck test is named
