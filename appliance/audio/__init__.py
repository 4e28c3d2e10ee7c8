"""Audio DSP. The output path (exported here): loudness normalisation, resampling to 48 kHz, 20 ms
PCM16 framing. The listening side, imported from its modules: :mod:`.vad` (speech detection and
endpointing), :mod:`.noise_gate` (its adaptive energy gate), :mod:`.echo` (how loud the reply is in
the microphone).

Bottom layer: imports nothing from other ``appliance`` subpackages.
"""

from appliance.audio.chain import OutputChain
from appliance.audio.framing import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    OUTPUT_RATE,
    FrameAssembler,
    float_to_pcm16,
    pcm16_to_float,
)
from appliance.audio.loudness import LoudnessNormalizer
from appliance.audio.resample import StreamResampler, resample

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
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
