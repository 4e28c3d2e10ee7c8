"""The session protocol's messages: each server event's JSON, and what the parsers accept and refuse."""

from __future__ import annotations

import json

import pytest

from appliance.transport import protocol as p


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (p.Ready("s1"), {"type": "ready", "session_id": "s1", "sample_rate": 48000, "frame_ms": 20}),
        (p.StateChanged("LISTENING"), {"type": "state", "state": "LISTENING"}),
        (p.VadEvent("speech_start"), {"type": "vad", "event": "speech_start"}),
        (p.VadEvent("speech_end"), {"type": "vad", "event": "speech_end"}),
        (p.Transcript("hello there", False), {"type": "transcript", "text": "hello there", "final": False}),
        (p.Transcript("hello there", True), {"type": "transcript", "text": "hello there", "final": True}),
        (p.ReplyText("Hi."), {"type": "reply", "text": "Hi."}),
        (p.ReplyEnd(), {"type": "reply_end"}),
        (p.BargeIn(), {"type": "barge_in"}),
        (p.ErrorEvent("busy", "too many"), {"type": "error", "code": "busy", "message": "too many"}),
    ],
)
def test_server_events_are_exactly_the_wire_json(event, expected):
    assert event.to_dict() == expected
    assert list(event.to_dict()) == list(expected)  # key order too: "type" first
    assert json.loads(p.encode(event.to_dict())) == expected


def test_metrics_carry_the_five_timings_then_any_extra_ones():
    m = p.TurnMetrics(
        endpoint_ms=1.5,
        asr_ms=20.0,
        responder_ms=None,
        tts_first_frame_ms=80.1,
        voice_to_voice_ms=300.0,
        extra={"asr_queue_ms": 2.0},
    )
    assert list(m.to_dict().items()) == [
        ("type", "metrics"),
        ("endpoint_ms", 1.5),
        ("asr_ms", 20.0),
        ("responder_ms", None),
        ("tts_first_frame_ms", 80.1),
        ("voice_to_voice_ms", 300.0),
        ("asr_queue_ms", 2.0),
    ]
    assert p.TurnMetrics().to_dict() == {
        "type": "metrics",
        "endpoint_ms": None,
        "asr_ms": None,
        "responder_ms": None,
        "tts_first_frame_ms": None,
        "voice_to_voice_ms": None,
    }


def test_events_are_immutable_and_a_dict_passes_through_to_message():
    with pytest.raises(AttributeError):
        p.ReplyText("a").text = "b"  # type: ignore[misc]
    assert p.to_message({"type": "reply_end"}) == {"type": "reply_end"}
    assert p.to_message(p.ReplyEnd()) == {"type": "reply_end"}
    assert p.encode({"type": "x", "a": 1}) == '{"type":"x","a":1}'


def test_client_messages_a_client_sends():
    assert p.Hello(16000).to_dict() == {"type": "hello", "sample_rate": 16000}
    assert p.Hello(16000, "t", "v").to_dict() == {
        "type": "hello",
        "sample_rate": 16000,
        "token": "t",
        "voice": "v",
    }
    assert p.Bye().to_dict() == {"type": "bye"}


def test_parse_hello():
    assert p.parse_hello({"type": "hello", "sample_rate": 16000, "voice": "v"}) == p.Hello(16000, None, "v")
    for rate in (7999, 48001, "16000", True, None):
        with pytest.raises(p.ProtocolError) as err:
            p.parse_hello({"type": "hello", "sample_rate": rate})
        assert err.value.code == "unsupported_sample_rate" and err.value.close_code == p.CloseCode.BAD_RATE
    with pytest.raises(p.ProtocolError) as err:
        p.parse_hello({"type": "hello", "sample_rate": 16000, "token": 5})
    assert err.value.code == "bad_message" and err.value.fatal


def test_parse_text_message_and_event():
    assert p.parse_event(p.parse_text_message('{"type":"text","text":"hi"}')) == p.TextTurn("hi")
    assert p.parse_event({"type": "say", "text": "hi"}) == p.Say("hi")
    assert p.parse_event({"type": "interrupt"}) == p.Interrupt()
    assert p.parse_event({"type": "bye"}) == p.Bye()
    cases = [
        ("not json", "bad_json"),
        ("[1]", "bad_message"),
        ('{"type": 1}', "bad_message"),
        ('{"type":"text","text":"  "}', "bad_message"),
        ('{"type":"text","text":"' + "a" * (p.MAX_TEXT_CHARS + 1) + '"}', "text_too_long"),
        ('{"type":"hello","sample_rate":16000}', "bad_message"),
        ('{"type":"dance"}', "unknown_type"),
    ]
    for raw, code in cases:
        with pytest.raises(p.ProtocolError) as err:
            p.parse_event(p.parse_text_message(raw))
        assert err.value.code == code, raw
        assert not err.value.fatal  # reported and skipped, the connection stays open


def test_check_audio():
    p.check_audio(bytes(3200), 16000)  # 100 ms
    with pytest.raises(p.ProtocolError, match="even number"):
        p.check_audio(bytes(3), 16000)
    with pytest.raises(p.ProtocolError, match="limited to 100 ms"):
        p.check_audio(bytes(3232), 16000)


async def test_a_channel_sends_typed_events_as_their_json():
    from appliance.transport.base import Channel

    class Recording(Channel):
        def __init__(self):
            self.sent = []

        async def receive(self):
            return None

        async def send_message(self, message):
            self.sent.append(message)

        async def send_audio(self, frame):
            pass

        async def close(self, code=1000, reason=""):
            pass

        @property
        def closed(self):
            return False

    channel = Recording()
    await channel.send_event(p.Ready("s1"))
    await channel.send_event(p.StateChanged("LISTENING"))
    await channel.send_event({"type": "reply_end"})  # a plain dict still passes, until every sender is typed
    await channel.send_error("busy", "full")
    assert channel.sent == [
        {"type": "ready", "session_id": "s1", "sample_rate": 48000, "frame_ms": 20},
        {"type": "state", "state": "LISTENING"},
        {"type": "reply_end"},
        {"type": "error", "code": "busy", "message": "full"},
    ]
