"""`appliance run` (what `make run` starts) and `appliance chat`, as an operator types them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from speech import listen, wer
from voices import pad, piper_speech

from appliance.audio.wavio import read_wav, write_wav
from appliance.process import free_port


def test_run_then_chat_with_a_wav(tmp_path):
    port = free_port()
    log = (tmp_path / "run.log").open("wb")
    # The echo responder (named in the environment): this test is about the plumbing, and the
    # embedded LLM's own spoken turns are tested in test_conversation_llm.py.
    run = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "APPLIANCE_RESPONDER__KIND": "echo"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                )
                break
            except OSError:
                assert run.poll() is None, (tmp_path / "run.log").read_text()
                assert time.monotonic() < deadline, "appliance run did not come up"
                time.sleep(0.3)
        assert f"http://localhost:{port}/" in (tmp_path / "run.log").read_text()
        assert health["responder"] == "echo"

        question = tmp_path / "question.wav"
        write_wav(
            question,
            pad(piper_speech("Can you turn on the radio?", 22050), 22050, 0.3, 0.2).tobytes(),
            22050,
        )
        reply_wav = tmp_path / "reply.wav"
        chat = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "chat",
                "--wav",
                str(question),
                "--url",
                f"ws://127.0.0.1:{port}/ws",
                "--out",
                str(reply_wav),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert chat.returncode == 0, chat.stdout + chat.stderr
        lines = {
            line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
            for line in chat.stdout.splitlines()
            if ":" in line
        }
        assert wer("can you turn on the radio", lines["you"]) <= 0.2, chat.stdout  # one word of six
        assert lines["appliance"]
        assert "voice_to_voice_ms" in lines["metrics"]
        samples, rate = read_wav(reply_wav)
        assert rate == 48000 and len(samples) % 960 == 0
        assert wer(lines["appliance"], listen(samples, rate, lines["appliance"])) <= 0.25
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0
        log.close()
    # The worker child went with it: nothing listens on the appliance's port any more.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        raise AssertionError("still serving after SIGTERM")
    except OSError:
        pass


def test_chat_reports_a_server_that_is_not_there(tmp_path):
    wav = tmp_path / "q.wav"
    write_wav(wav, b"\x00\x00" * 1600, 16000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "chat",
            "--wav",
            str(wav),
            "--url",
            f"ws://127.0.0.1:{free_port()}/ws",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot connect" in result.stderr
