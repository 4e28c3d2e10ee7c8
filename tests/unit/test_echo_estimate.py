from __future__ import annotations

import numpy as np

from appliance.audio.echo import EchoEstimate


def frame(dbfs: float) -> bytes:
    t = np.arange(960) / 48000
    amplitude = 10 ** (dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes()


def test_level_is_the_loudest_recent_frame_less_the_return_loss():
    echo = EchoEstimate(return_loss_db=20, window_s=0.5)
    assert echo.level_db(0.0) is None
    echo.played(frame(-30), 0.0)
    echo.played(frame(-12), 0.1)
    echo.played(frame(-25), 0.2)
    assert abs(echo.level_db(0.3) - (-32)) < 0.5
    # The loud frame ages out; the quieter later one remains.
    assert abs(echo.level_db(0.65) - (-45)) < 0.5
    assert echo.level_db(1.0) is None


def test_silence_does_not_break_it():
    echo = EchoEstimate(return_loss_db=20)
    echo.played(b"\x00\x00" * 960, 0.0)
    assert echo.level_db(0.1) < -100
