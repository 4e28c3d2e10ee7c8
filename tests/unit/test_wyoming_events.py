"""Wyoming framing read with bounds, and the fields the server uses checked for type."""

from __future__ import annotations

import asyncio
import json

import pytest
from wyoming.event import Event, async_write_event

from appliance.interop.wyoming_events import MAX_PAYLOAD_BYTES, BadEvent, bad_fields, read_event


def reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def writelines(self, lines) -> None:
        self.data += b"".join(lines)

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


async def test_an_event_the_wyoming_library_wrote_reads_back_whole():
    sink = _Sink()
    sent = Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\x01\x02" * 5)
    await async_write_event(sent, sink)
    got = await read_event(reader(sink.data))
    assert (got.type, got.data, got.payload) == (sent.type, sent.data, sent.payload)
    assert await read_event(reader(b"")) is None
    assert await read_event(reader(b'{"type": "describe"')) is None  # cut off by the end of the stream


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json\n", "not JSON"),
        (b"[1]\n", "JSON object"),
        (b'{"no": "type"}\n', "'type'"),
        (b'{"type": 5}\n', "'type'"),
        (b'{"type": "x", "data": [1]}\n', "'data'"),
        (b'{"type": "x", "data_length": "5"}\n', "data_length"),
        (b'{"type": "x", "data_length": -1}\n', "data_length"),
        (b'{"type": "x", "payload_length": true}\n', "payload_length"),
        (
            json.dumps({"type": "x", "payload_length": MAX_PAYLOAD_BYTES + 1}).encode() + b"\n",
            "payload_length",
        ),
        (b'{"type": "x", "data_length": 3}\n[1]', "data"),
        (b'{"type": "x", "data_length": 2}\n[[', "not JSON"),
        (b"[" * 5000 + b"]" * 5000 + b"\n", "not JSON"),
        (b"x" * 70_000 + b"\n", "too long"),
    ],
)
async def test_broken_framing_is_a_bad_event(line, why):
    with pytest.raises(BadEvent, match=why):
        await read_event(reader(line))


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (Event("synthesize", {}), "needs 'text'"),
        (Event("synthesize", {"text": None}), "needs 'text'"),
        (Event("synthesize", {"text": 5}), "'text' must be a string"),
        (Event("synthesize", {"text": "Hi.", "voice": "x"}), "'voice' must be a JSON object"),
        (Event("synthesize", {"text": "Hi.", "voice": {"name": 5}}), "voice 'name'"),
        (Event("audio-start", {"rate": "16000", "width": 2, "channels": 1}), "'rate' must be a whole number"),
        (Event("audio-chunk", {"rate": True, "width": 2, "channels": 1}), "'rate' must be a whole number"),
        (Event("audio-chunk", {"rate": 0, "width": 2, "channels": 1}), "rate must be from 1"),
        (Event("audio-start", {"rate": 16000, "width": 2, "channels": 0}), "channels must be from 1"),
        (Event("transcribe", {"language": 5}), "'language' must be a string"),
    ],
)
def test_fields_of_the_wrong_type_are_named(event, problem):
    assert problem in bad_fields(event)


def test_well_formed_and_unknown_events_pass_and_null_optionals_count_as_absent():
    assert bad_fields(Event("synthesize", {"text": "Hi.", "voice": {"name": "x", "speaker": None}})) is None
    assert bad_fields(Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 1})) is None
    assert bad_fields(Event("something-new", {"anything": [1]})) is None
    event = Event("synthesize", {"text": "Hi.", "voice": None})
    assert bad_fields(event) is None and "voice" not in event.data
