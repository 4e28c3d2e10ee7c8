"""Engine adapters, one file per engine. ``create_adapter`` picks the class for a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.tts.adapters.base import EngineAdapter, EngineBusy, InputRejected, PcmChunk, SynthesisTracker
from appliance.tts.adapters.csm import CsmAdapter
from appliance.tts.adapters.hibari import HibariAdapter
from appliance.tts.adapters.kokoro import KokoroAdapter
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.adapters.piper import PiperAdapter
from appliance.tts.adapters.xtts import XttsAdapter
from appliance.tts.catalog import ModelSpec

ENGINES: dict[str, type[EngineAdapter]] = {
    cls.engine: cls
    for cls in (MockSineAdapter, PiperAdapter, HibariAdapter, KokoroAdapter, CsmAdapter, XttsAdapter)
}


def create_adapter(
    spec: ModelSpec,
    device: str = "auto",
    models_dir: Path | None = None,
    onnx_threads: int = 0,
    contended: Callable[[], bool] | None = None,
) -> EngineAdapter:
    adapter = ENGINES[spec.engine](spec, device)
    adapter.models_dir = models_dir
    adapter.onnx_threads = onnx_threads
    if contended is not None:
        adapter.contended = contended
    return adapter


__all__ = [
    "ENGINES",
    "EngineAdapter",
    "EngineBusy",
    "InputRejected",
    "PcmChunk",
    "SynthesisTracker",
    "create_adapter",
]
