"""Fetching from an upstream URL: streamed into NAME.part, resumed with Range after a kill, checked
before the rename. A tiny local HTTP server with Range support serves a real model file."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

from appliance.modelstore.fetch import Fetcher, FetchError
from appliance.modelstore.lock import load_lock, parse_lock
from appliance.modelstore.lockgen import render
from appliance.modelstore.sources import InstalledPackages
from appliance.modelstore.verify import check_model

ROOT = Path(__file__).resolve().parents[2]
SILERO = "silero-vad"
NAME = "silero_vad_v6.onnx"


class RangeServer:
    """Serves ``files`` (path → bytes) with Range support; ``chunk``/``delay`` slow it down,
    ``drop_after`` closes the connection after that many bytes of a response."""

    def __init__(
        self,
        files: dict[str, bytes],
        chunk: int = 65536,
        delay: float = 0.0,
        drop_after: int | None = None,
        honour_range: bool = True,
    ) -> None:
        self.files, self.chunk, self.delay = files, chunk, delay
        self.drop_after, self.honour_range = drop_after, honour_range
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                sent = 0
                for i in range(start, len(data), server.chunk):
                    piece = data[i : i + server.chunk]
                    if server.drop_after is not None and sent + len(piece) > server.drop_after:
                        self.wfile.write(piece[: server.drop_after - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    try:
                        self.wfile.write(piece)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    sent += len(piece)
                    if server.delay:
                        time.sleep(server.delay)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def real_model():
    lock = load_lock(ROOT / "models.lock")
    ref = lock.get(SILERO).files[0].sources[0].ref
    with InstalledPackages().open(ref) as (fh, _size):
        return fh.read()


def lock_pointing_at(url: str, folder: Path, sha256: str | None = None) -> Path:
    """models.lock with silero-vad's upstream URL replaced by ``url`` (written to ``folder``)."""
    data = tomllib.loads((ROOT / "models.lock").read_text())
    f = data["model"][3]["file"][0]
    assert f["name"] == NAME
    f["source"][1]["url"] = url
    if sha256:
        f["sha256"] = sha256
    path = folder / "models.lock"
    path.write_text(render(parse_lock(data, path)))
    return path


def fetch(lock_path: Path, dest: Path, err: io.StringIO | None = None) -> list:
    lock = load_lock(lock_path)
    fetcher = Fetcher(
        lock, dest, strategies=["url"], out=io.StringIO(), err=err or io.StringIO(), progress=False
    )
    return fetcher.fetch([lock.get(SILERO)])


def test_a_killed_download_leaves_only_a_part_file_and_the_next_run_resumes(real_model, tmp_path):
    half = len(real_model) // 2
    with RangeServer({"/silero.onnx": real_model}, chunk=32768, delay=0.05) as server:
        lock_path = lock_pointing_at(server.base + "/silero.onnx", tmp_path)
        dest = tmp_path / "models"
        part, final = dest / SILERO / f"{NAME}.part", dest / SILERO / NAME
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "models",
            "fetch",
            "--dir",
            str(dest),
            "--lock",
            str(lock_path),
            "--model",
            SILERO,
            "--source",
            "url",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size >= half):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the download never got half way"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)  # as a power cut or an OOM kill would
        finally:
            proc.wait(10)
        kept = part.stat().st_size
        assert half <= kept < len(real_model)
        assert not final.exists()  # a half-written file is never taken as the model
        assert real_model.startswith(part.read_bytes())

        server.delay = 0
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1].endswith("changed=true")
        assert server.requests[-1] == ("/silero.onnx", f"bytes={kept}-")  # resumed, not restarted
    assert final.read_bytes() == real_model
    assert not part.exists()
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "models",
            "verify",
            "--dir",
            str(dest),
            "--lock",
            str(lock_path),
            "--model",
            SILERO,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_dropped_connection_is_reported_and_resumed(real_model, tmp_path):
    with RangeServer({"/m": real_model}, drop_after=400_000) as server:
        lock_path = lock_pointing_at(server.base + "/m", tmp_path)
        dest = tmp_path / "models"
        with pytest.raises(FetchError, match=f"{NAME}.part kept for a resume"):
            fetch(lock_path, dest)
        assert (dest / SILERO / f"{NAME}.part").stat().st_size == 400_000
        assert not (dest / SILERO / NAME).exists()
        server.drop_after = None
        (result,) = fetch(lock_path, dest)
        assert result.action == "fetched"
        assert [r for _p, r in server.requests] == [None, "bytes=400000-"]
    assert check_model(load_lock(lock_path).get(SILERO), dest).state == "verified"


def test_a_server_that_ignores_range_is_restarted_from_zero(real_model, tmp_path):
    with RangeServer({"/m": real_model}, honour_range=False) as server:
        lock_path = lock_pointing_at(server.base + "/m", tmp_path)
        dest = tmp_path / "models"
        (dest / SILERO).mkdir(parents=True)
        (dest / SILERO / f"{NAME}.part").write_bytes(real_model[:1000])
        (result,) = fetch(lock_path, dest)
        assert result.action == "fetched" and server.requests == [("/m", "bytes=1000-")]
    assert (dest / SILERO / NAME).read_bytes() == real_model


def test_wrong_bytes_from_a_url_are_refused_and_discarded(real_model, tmp_path):
    tampered = bytearray(real_model)
    tampered[12345] ^= 0xFF
    with RangeServer({"/m": bytes(tampered)}) as server:
        lock_path = lock_pointing_at(server.base + "/m", tmp_path)
        dest = tmp_path / "models"
        err = io.StringIO()
        with pytest.raises(FetchError, match="no source worked"):
            fetch(lock_path, dest, err)
        assert "refused url" in err.getvalue() and "sha256 mismatch" in err.getvalue()
    assert not (dest / SILERO / NAME).exists()
    assert not (dest / SILERO / f"{NAME}.part").exists()  # bad bytes are not kept for a "resume"


def test_http_errors_fall_through_to_the_next_source(real_model, tmp_path):
    with RangeServer({}) as server:
        lock_path = lock_pointing_at(server.base + "/missing", tmp_path)
        lock = load_lock(lock_path)
        err = io.StringIO()
        fetcher = Fetcher(
            lock, tmp_path / "m", strategies=["url", "package"], out=io.StringIO(), err=err, progress=False
        )
        (result,) = fetcher.fetch([lock.get(SILERO)])
    assert "skipped url" in err.getvalue() and "HTTP 404" in err.getvalue()
    assert result.source.startswith("package:")
