"""A transcript in the OpenAI API's response formats: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

from appliance.asr.base import Transcript

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}
# verbose_json names the language in English words, as OpenAI's does ("english").
LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "pl": "polish",
    "ru": "russian",
    "ja": "japanese",
    "zh": "chinese",
}


def _segments(t: Transcript) -> list[tuple[float, float, str, float]]:
    """(start, end, text, no_speech_prob) of each segment with text; the whole text when the engine gave none."""
    parts = [
        (s.start, min(s.end, t.audio_s) if t.audio_s else s.end, s.text, s.no_speech_prob)
        for s in (t.segments or [])
        if s.text
    ]
    if not parts and t.text:
        parts = [(0.0, t.audio_s, t.text, 0.0)]
    return parts


def verbose_json(t: Transcript) -> dict:
    segments = [
        {
            "id": i,
            "seek": 0,
            "start": round(start, 3),
            "end": round(end, 3),
            "text": " " + text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": 0.0,
            "no_speech_prob": float(no_speech),
        }
        for i, (start, end, text, no_speech) in enumerate(_segments(t))
    ]
    return {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(t.language, t.language),
        "duration": round(t.audio_s, 3),
        "text": t.text,
        "segments": segments,
    }


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(t: Transcript) -> str:
    cues = [
        f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n"
        for i, (a, b, text, _) in enumerate(_segments(t), 1)
    ]
    return "\n".join(cues)


def vtt(t: Transcript) -> str:
    cues = [f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n" for a, b, text, _ in _segments(t)]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(t: Transcript, response_format: str) -> tuple[str | dict, str]:
    """The body (a dict for the JSON formats) and its content type."""
    body: str | dict
    if response_format == "json":
        body = {"text": t.text}
    elif response_format == "verbose_json":
        body = verbose_json(t)
    elif response_format == "srt":
        body = srt(t)
    elif response_format == "vtt":
        body = vtt(t)
    else:
        body = t.text
    return body, CONTENT_TYPES[response_format]
