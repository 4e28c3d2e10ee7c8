"""WhisperAsr's choices made before any model is loaded: device, compute type, language."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.asr import whisper
from appliance.asr.whisper import WhisperAsr, resolve_compute_type, resolve_device, resolve_language


def test_auto_device_is_cuda_only_when_ctranslate2_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(whisper, "cuda_device_count", lambda: 1)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(whisper, "cuda_device_count", lambda: 0)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_auto_compute_type_is_int8_on_cpu_and_float16_on_cuda(monkeypatch):
    import ctranslate2

    assert resolve_compute_type("auto", "cpu") == "int8"
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda _device: {"float16", "int8"})
    assert resolve_compute_type("auto", "cuda") == "float16"
    no_fp16 = {"float32", "int8_float32"}
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda _device: no_fp16)
    assert resolve_compute_type("auto", "cuda") == "int8_float32"
    assert resolve_compute_type("float32", "cpu") == "float32"


def test_language_defaults_to_english():
    assert resolve_language(None, english_only=True) == "en"
    assert resolve_language("en", english_only=True) == "en"
    assert resolve_language(None, english_only=False) == "en"
    assert resolve_language("de", english_only=False) == "de"
    assert resolve_language("auto", english_only=False) is None
    with pytest.raises(ValueError, match="English-only"):
        resolve_language("fr", english_only=True)


def test_constructor_rejects_bad_options_before_loading():
    with pytest.raises(ValueError, match="English-only"):
        WhisperAsr("tiny.en", language="fr")
    with pytest.raises(ValueError, match="device"):
        WhisperAsr(device="gpu")
    with pytest.raises(ValueError, match="beam_size"):
        WhisperAsr(beam_size=0)
    with pytest.raises(ValueError, match="cpu_threads"):
        WhisperAsr(cpu_threads=-1)


def test_names():
    assert WhisperAsr().name == "whisper-tiny.en"
    assert WhisperAsr("base", language="de").name == "whisper-base"
    assert WhisperAsr("/models/my-whisper").name == "whisper-my-whisper"


def test_auto_device_falls_back_to_cpu_when_cuda_fails(monkeypatch):
    monkeypatch.setattr(whisper, "cuda_device_count", lambda: 1)
    tried = []

    def fake_load_on(self, path: Path, device: str) -> None:
        tried.append(device)
        if device == "cuda":
            raise RuntimeError("Library libcublas.so.12 is not found")
        self.device, self.loaded = device, True

    monkeypatch.setattr(WhisperAsr, "_load_on", fake_load_on)
    engine = WhisperAsr("tiny.en")
    engine.load()
    assert tried == ["cuda", "cpu"] and engine.device == "cpu"

    tried.clear()
    with pytest.raises(RuntimeError, match="libcublas"):
        WhisperAsr("tiny.en", device="cuda").load()
    assert tried == ["cuda"]
