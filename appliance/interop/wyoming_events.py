"""Wyoming events as a careless or hostile client may send them.

``read_event`` reads the framing (a JSON header line, then ``data_length`` bytes of JSON data and
``payload_length`` bytes of payload) with bounds, and ``bad_fields`` checks the fields the server
uses for their types, so that a malformed event is answered with an ``error`` event instead of
an exception. After a framing error the connection cannot go on (what follows may be the lying
event's data), so the server closes it; after a bad field it can.
"""

from __future__ import annotations

import asyncio
import json

from wyoming.event import Event

MAX_DATA_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 16 << 20  # over a second of 32-bit 8-channel audio at 384 kHz
MAX_RATE = 384_000
MAX_CHANNELS = 64


class BadEvent(Exception):
    """The stream of events is broken; the message says how."""


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise BadEvent(f"{key} must be a whole number from 0 to {limit}, got {value!r}")
    return value


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadEvent(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise BadEvent(f"{what} must be a JSON object")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event; None once the client has closed. Raises BadEvent for broken framing."""
    try:
        line = await reader.readline()
    except ValueError:  # over the reader's limit (64 KiB)
        raise BadEvent("the header line is too long") from None
    if not line.endswith(b"\n"):
        return None  # the end of the stream, perhaps cut mid-line
    header = _json_object(line, "the header line")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadEvent("the header needs a 'type' string")
    data = header.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise BadEvent("'data' must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    if data_length:
        data = {**data, **_json_object(await reader.readexactly(data_length), "the event's data")}
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=kind, data=data, payload=payload)


_TEXT = {"text": (str, True)}
_VOICE = {"voice": (dict, False)}
_AUDIO = {"rate": (int, True), "width": (int, True), "channels": (int, True)}
FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "synthesize": {**_TEXT, **_VOICE},
    "synthesize-start": _VOICE,
    "synthesize-chunk": _TEXT,
    "transcribe": {"language": (str, False), "name": (str, False)},
    "audio-start": _AUDIO,
    "audio-chunk": _AUDIO,
    "ping": {"text": (str, False)},
}
_VOICE_FIELDS = ("name", "language", "speaker")
_KIND_NAMES = {str: "a string", int: "a whole number", dict: "a JSON object"}


def bad_fields(event: Event) -> str | None:
    """What is wrong with the fields of an event the server handles; None when nothing is.
    A null optional field is taken as absent (it is dropped from ``event.data``)."""
    fields = FIELDS.get(event.type)
    if fields is None:
        return None
    data = event.data
    for key, (kind, required) in fields.items():
        if data.get(key) is None:
            data.pop(key, None)
            if required:
                return f"{event.type} needs '{key}'"
            continue
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{event.type}: '{key}' must be {_KIND_NAMES[kind]}"
    voice = data.get("voice", {})
    for key in _VOICE_FIELDS:
        if voice.get(key) is not None and not isinstance(voice[key], str):
            return f"{event.type}: voice '{key}' must be a string"
    if "rate" in fields and not 1 <= data["rate"] <= MAX_RATE:
        return f"{event.type}: rate must be from 1 to {MAX_RATE} Hz"
    if "channels" in fields and not 1 <= data["channels"] <= MAX_CHANNELS:
        return f"{event.type}: channels must be from 1 to {MAX_CHANNELS}"
    return None
