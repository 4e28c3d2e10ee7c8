"""Speech recognition: the engine interface and the faster-whisper engine.

Bottom layer: imports only ``appliance.audio`` and ``appliance.modelstore``. faster-whisper itself is imported when a model
is loaded, so importing this package is cheap.
"""

from appliance.asr.base import MIN_AUDIO_S, SAMPLE_RATE, AsrEngine, Recognition, Transcript, TranscriptSegment
from appliance.asr.models import WHISPER_MODELS, ModelNotInstalled, locate_whisper_model
from appliance.asr.whisper import WhisperAsr, whisper_from_settings

__all__ = [
    "MIN_AUDIO_S",
    "SAMPLE_RATE",
    "WHISPER_MODELS",
    "AsrEngine",
    "ModelNotInstalled",
    "Recognition",
    "Transcript",
    "TranscriptSegment",
    "WhisperAsr",
    "locate_whisper_model",
    "whisper_from_settings",
]
