"""The WebRTC and LiveKit channels' inbound queue: bounded audio, events never dropped, ended wakes."""

from __future__ import annotations

import asyncio

from appliance.transport.inbox import Inbox
from appliance.transport.protocol import AudioIn, Interrupt

RATE = 1000  # 2 bytes a sample: 2000 bytes are one second


async def test_a_lagging_session_drops_its_oldest_audio_never_an_event():
    inbox = Inbox(RATE, 2.0, lambda: "test")
    inbox.put_audio(b"\x01" * 2000)
    inbox.put(Interrupt())
    for i in range(2, 5):
        inbox.put_audio(bytes([i]) * 2000)
    got = [await inbox.get() for _ in range(3)]
    assert isinstance(got[0], Interrupt)
    assert [m.pcm[0] for m in got[1:] if isinstance(m, AudioIn)] == [3, 4]  # seconds 1 and 2 went


async def test_a_reader_waiting_is_woken_by_a_message_and_by_the_end():
    inbox = Inbox(RATE, 2.0, lambda: "test")
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put(Interrupt())
    assert isinstance(await asyncio.wait_for(reader, 1), Interrupt)
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.close()
    assert await asyncio.wait_for(reader, 1) is None
