"""Faults while several people talk at once: three spoken sessions over the real WebSocket (real
speech, in real time) against the real orchestrator and real Piper worker processes, and one fault
injected while their replies play. A worker that can voice them is always left, so every reply
completes, with no error event, and its audio says its text; no session is left SPEAKING, every
/metrics comes back to 0 active sessions and a fresh session works.

Here: Redis killed and restarted under routed sessions, and workers killed and hung (static
list and Redis discovery). The client
and disk side (a client that stops reading, a read-only models directory) are in
test_faults_under_load_io.py."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from spoken_load import (
    after_the_fault,
    check_turns,
    cluster,
    fresh_session_works,
    metric,
    speaking,
    start_turns,
    talkers,
    until,
    workers_view,
)
from test_failover import _serving


async def _redis_connected(orch) -> bool:
    return bool((await asyncio.to_thread(workers_view, orch))["redis"]["connected"])


async def test_redis_killed_and_restarted_while_routed_replies_play(redis_server):
    with cluster(2, redis=redis_server) as (orch, workers):
        group = await talkers(orch.url)
        routed = {
            w.address: await metric(
                orch.http + "/metrics", "appliance_worker_routed_total", address=w.address
            )
            for w in workers
        }
        assert all(routed.values()), f"the sessions were not spread over both workers: {routed}"
        first = start_turns(group)
        await until(lambda: speaking(group) >= 2, "two replies playing at once")

        redis_server.proc.kill()  # SIGKILL: no goodbye to anyone
        redis_server.proc.wait()
        redis_server.proc = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while await _redis_connected(orch):
            assert loop.time() < deadline, "the orchestrator never noticed Redis going"
            await asyncio.sleep(0.1)
        redis_server.start()  # empty: the workers must register again

        turns = list(await asyncio.gather(*first))
        keys = [f"appliance:worker:{w.address}" for w in workers]
        deadline = loop.time() + 60
        while not (redis_server.command("EXISTS", *keys) == f":{len(keys)}" and await _redis_connected(orch)):
            assert loop.time() < deadline, f"the workers did not register again:\n{workers[0].log()[-2000:]}"
            await asyncio.sleep(0.2)

        # After the outage: the same sessions go on, and new ones are routed to the workers again.
        turns += await after_the_fault(orch, group, workers)
        assert {w.address for w in workers} <= {w["address"] for w in workers_view(orch)["workers"]}
    check_turns(turns)


@pytest.mark.parametrize("discovery", ["static", "redis"])
async def test_a_worker_killed_and_another_hung_while_sessions_speak(discovery, request):
    """Three workers, in the static list or registered in Redis; one serving the sessions is
    SIGKILLed and the next (in the static list, where a failover goes first) SIGSTOPped at once —
    a hung worker's Redis record stays until its TTL runs out — then let go again: the replies go
    on from the third, and the hung one holds no session once it runs again."""
    redis = request.getfixturevalue("redis_server") if discovery == "redis" else None
    with cluster(3, redis=redis) as (orch, workers):
        group = await talkers(orch.url)
        first = start_turns(group)
        await until(lambda: speaking(group) >= 2, "two replies playing at once")
        killed = await _serving(workers)
        hung = next(w for w in workers[workers.index(killed) + 1 :] + workers if w is not killed)
        os.kill(killed.proc.pid, signal.SIGKILL)
        os.kill(hung.proc.pid, signal.SIGSTOP)
        try:
            # A session that starts meanwhile is served too (the hung worker is first in the list).
            turns = list(await asyncio.gather(*first, fresh_session_works(orch)))
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)
        killed.proc.wait()

        turns += await after_the_fault(orch, group, workers)  # the hung one's sessions end too
        failovers = await metric(
            orch.http + "/metrics", "appliance_tts_failovers_total", worker=killed.address
        )
    assert failovers >= 1  # the fault did hit replies under way
    check_turns(turns)
