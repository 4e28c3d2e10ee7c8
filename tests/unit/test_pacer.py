from __future__ import annotations

import asyncio

from appliance.orchestrator.session.pacer import Pacer


class Sink:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.frames: list[bytes] = []

    async def __call__(self, frame: bytes) -> None:
        self.times.append(asyncio.get_running_loop().time())
        self.frames.append(frame)


async def test_lead_is_bounded_and_rate_is_real_time():
    sink = Sink()
    pacer = Pacer(sink, lead_s=0.1)
    pacer.start()
    t0 = asyncio.get_running_loop().time()
    for i in range(30):
        pacer.push(bytes([i]))
    await asyncio.wait_for(pacer.drained(), 5)
    await pacer.close()
    assert [f[0] for f in sink.frames] == list(range(30))
    # Frame i may leave no earlier than its playout time minus the lead.
    for i, t in enumerate(sink.times):
        assert t - t0 >= i * 0.02 - 0.1 - 0.005, (i, t - t0)
    # And the whole reply took about its duration minus the lead (not a burst).
    assert sink.times[-1] - t0 >= 29 * 0.02 - 0.1 - 0.005


async def test_hold_stops_sending_before_the_next_frame_and_clear_drops_the_queue():
    sink = Sink()
    pacer = Pacer(sink, lead_s=0.1)
    pacer.start()
    for i in range(50):
        pacer.push(bytes([i]))
    await asyncio.sleep(0.1)
    pacer.hold()
    sent_at_hold = len(sink.frames)
    await asyncio.sleep(0.2)
    assert len(sink.frames) == sent_at_hold  # nothing leaks while held
    pacer.release()
    await asyncio.sleep(0.1)
    assert len(sink.frames) > sent_at_hold
    pacer.hold()
    dropped = pacer.clear()
    assert dropped > 0 and pacer.queued == 0
    await asyncio.wait_for(pacer.drained(), 1)
    await pacer.close()
    assert [f[0] for f in sink.frames] == list(range(len(sink.frames)))  # in order, none repeated


async def test_first_send_callback_fires_once():
    sink = Sink()
    pacer = Pacer(sink, lead_s=0.1)
    pacer.start()
    fired = []
    pacer.on_next_send(lambda: fired.append(len(sink.frames)))
    pacer.push(b"a")
    pacer.push(b"b")
    await asyncio.wait_for(pacer.drained(), 1)
    await pacer.close()
    assert fired == [1]


async def test_a_vanished_client_ends_the_pacer_quietly():
    async def broken(frame: bytes) -> None:
        raise ConnectionResetError("gone")

    pacer = Pacer(broken)
    pacer.start()
    pacer.push(b"x")
    pacer.push(b"y")
    await asyncio.wait_for(pacer.drained(), 1)
    assert pacer.queued == 0
    # A reply still coming in after the client went is dropped: nothing is left waiting to drain
    # (the pacer that would send it has stopped), so whoever waits for the drain is not stuck.
    pacer.push(b"z")
    assert pacer.queued == 0
    await asyncio.wait_for(pacer.drained(), 1)
    await pacer.close()


async def test_drop_last_drops_only_the_newest_unsent_frames():
    sink = Sink()
    pacer = Pacer(sink, lead_s=0.1)
    pacer.start()
    for i in range(20):
        pacer.push(bytes([i]))
    await asyncio.sleep(0.05)  # a few frames are out (the lead)
    sent = len(sink.frames)
    assert 0 < sent < 20
    assert pacer.drop_last(5) == 5  # an unfinished segment, voiced again by the next worker
    await asyncio.wait_for(pacer.drained(), 1)
    assert [f[0] for f in sink.frames] == list(range(15))
    pacer.push(b"\x63")
    assert pacer.drop_last(1000) <= 1  # never more than is queued
    await pacer.close()


class QueuedTransport:
    """A transport that plays from a queue of its own, a frame every 20 ms (as WebRTC and LiveKit
    do), and can give back what it has not played."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.played: list[int] = []
        self.taken_back = 0

    async def send(self, frame: bytes) -> None:
        self.queue.append(frame)

    def take_back(self) -> int:
        n, self.queue = len(self.queue), []
        self.taken_back += n
        return n

    async def play(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            if self.queue:
                self.played.append(self.queue.pop(0)[0])


async def _playing(transport: QueuedTransport, frames: int) -> tuple[Pacer, asyncio.Task]:
    """A pacer feeding ``transport`` a reply of ``frames`` frames (each marked with its index),
    0.2 s into playing it."""
    pacer = Pacer(transport.send, lead_s=0.1, take_back=transport.take_back)
    player = asyncio.create_task(transport.play())
    pacer.start()
    for i in range(frames):
        pacer.push(bytes([i]), mark=i)
    await asyncio.sleep(0.2)
    return pacer, player


async def _played_out(transport: QueuedTransport, pacer: Pacer, player: asyncio.Task) -> None:
    await asyncio.wait_for(pacer.drained(), 3)
    while transport.queue:
        await asyncio.sleep(0.01)
    await pacer.close()
    player.cancel()


async def test_a_hold_takes_back_what_the_transport_has_not_played_and_a_release_plays_it():
    transport = QueuedTransport()
    pacer, player = await _playing(transport, 40)
    assert transport.queue  # the lead: sent but not played yet
    pacer.hold()
    assert transport.queue == [] and transport.taken_back > 0  # quiet at once, not a lead later
    played_at_hold = list(transport.played)
    assert pacer.sent_mark == (played_at_hold[-1] if played_at_hold else None)
    await asyncio.sleep(0.15)
    assert transport.played == played_at_hold  # nothing plays while held
    pacer.release()  # a false alarm: the reply goes on where the listener left it
    await asyncio.wait_for(_played_out(transport, pacer, player), 5)
    assert transport.played == list(range(40))  # every frame once, in order: none skipped, none twice


async def test_a_stop_after_a_hold_drops_what_was_taken_back():
    transport = QueuedTransport()
    pacer, player = await _playing(transport, 40)
    pacer.hold()
    played_at_hold = list(transport.played)
    pacer.clear()
    await asyncio.wait_for(pacer.drained(), 1)
    pacer.release()
    pacer.push(bytes([99]))  # the next reply's first frame
    await asyncio.wait_for(_played_out(transport, pacer, player), 5)
    assert transport.played == played_at_hold + [99]
