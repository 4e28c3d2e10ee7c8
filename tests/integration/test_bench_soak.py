"""`appliance bench soak` end to end, short: two spoken conversations at once against a real
`appliance run` (Piper worker, Whisper), each asking questions for half a minute. The JSON has every
figure docs/benchmarks.md quotes; every turn is answered; both service processes are sampled at
rest before and after, with no session left open. No timing or dropout count is asserted: those
are what the benchmark reports, not what a test on a shared machine can promise."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_soak_answers_every_turn_and_samples_both_processes(tmp_path):
    out = tmp_path / "soak.json"
    subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "soak", "--sessions", "2", "--minutes", "0.5"]
        + ["--sample-s", "5", "--out", str(out)],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    assert result["benchmark"] == "soak" and result["sessions"] == 2
    turns = result["turns"]
    assert turns["asked"] >= 4 and turns["unanswered"] == 0, result["unanswered_why"]
    assert result["session_failures"] == []
    v2v = result["voice_to_voice_ms"]
    assert v2v["n"] == turns["answered"] and 0 < v2v["min"] <= v2v["p50"] <= v2v["max"]
    assert set(result["dropouts"]) == {
        "frames_late_in_first_second",
        "frames_late_after_first_second",
        "replies_late_after_first_second",
    }
    procs = result["processes"]
    for rest in (procs["at_rest_after_warmup"], procs["at_rest_at_end"]):
        assert set(rest) == {"orchestrator", "worker"}
        for sample in rest.values():
            assert sample["sessions"] == 0
            assert sample["rss_mb"] > 0 and sample["fds"] > 0 and sample["threads"] > 0
            assert sample["asyncio_tasks"] > 0
    assert set(procs["growth"]) == {"orchestrator", "worker"}
    assert len(result["series"]) >= 2
    assert result["reference"]["sequential_floor_ms"] > 0
    assert set(result["targets"]) == {
        "no_unanswered_turn",
        "no_dropout_after_first_second",
        "rss_growth_le_10pct",
        "no_fd_or_task_growth",
    }
