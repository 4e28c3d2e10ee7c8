"""Audio DSP. The output path (exported here): loudness normalisation, resampling to 48 kHz, 20 ms
PCM16 framing. The listening side, imported from its modules: :mod:`.vad` (speech detection and
endpointing), :mod:`.noise_gate` (its adaptive energy gate), :mod:`.echo` (how loud the reply is in
the microphone).

Bottom layer: imports nothing from other ``appliance`` subpackages. The format constants are
imported at once; the processing parts when first used, so that naming the format (worker
records, the session protocol) does not load numpy and soxr.
"""

from __future__ import annotations

import importlib

from appliance.audio.format import FRAME_BYTES, FRAME_MS, FRAME_S, FRAME_SAMPLES, OUTPUT_RATE

_LAZY = {
    "FrameAssembler": "framing",
    "float_to_pcm16": "framing",
    "pcm16_to_float": "framing",
    "OutputChain": "chain",
    "LoudnessNormalizer": "loudness",
    "StreamResampler": "resampling",
    "resample": "resampling",
}

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "FRAME_S",
    "FRAME_SAMPLES",
    "OUTPUT_RATE",
    "FrameAssembler",
    "LoudnessNormalizer",
    "OutputChain",
    "StreamResampler",
    "float_to_pcm16",
    "pcm16_to_float",
    "resample",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
