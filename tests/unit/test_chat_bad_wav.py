"""`appliance chat` with a WAV it cannot read: a one-line error and exit code 2, no traceback."""

from __future__ import annotations

from appliance.chat import chat


async def test_a_missing_or_broken_wav_is_named_and_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_text("not a wav")
    for path in (tmp_path / "missing.wav", broken):
        assert await chat(str(path), "ws://127.0.0.1:1/ws", None) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"appliance chat: cannot read {path}:") and "Traceback" not in err
