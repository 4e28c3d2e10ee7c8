"""`appliance bench tts` end to end (a worker subprocess with the real Piper voice): the JSON has
every figure the README quotes, over >= 20 trials. No timing is asserted: speed is what the
benchmark reports, not what a test on a shared machine can promise."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_tts_prints_every_figure(tmp_path):
    out = tmp_path / "tts.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "bench",
            "tts",
            "--trials",
            "20",
            "--concurrency",
            "2",
            "--out",
            str(out),
        ],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    assert result["benchmark"] == "tts" and result["trials"] == 20
    for stats in (
        result["worker"]["ttfa_ms"],
        result["raw_piper"]["first_chunk_ms"],
        result["worker"]["rtf"],
    ):
        assert stats["n"] == 20 and 0 < stats["min"] <= stats["p50"] <= stats["p95"] <= stats["max"]
    control = result["control_ack_ms"]
    assert control["n"] >= 100 and control["frames_during_trials"] > 0  # acks measured while audio flowed
    concurrent = result["concurrent"]
    assert concurrent["sessions"] == 2 and concurrent["ttfa_ms"]["n"] >= 20
    assert concurrent["playback_lateness_ms"]["min"] >= 0
    assert set(result["targets"]) == {
        "ttfa_p50_within_15ms_of_raw",
        "ttfa_p95_le_120ms",
        "control_ack_p95_le_5ms",
        "rtf_le_0.1",
        "concurrent_2_ttfa_p95_le_250ms",
    }
