"""The LoRA voice gate of the CSM adapter: streams in the voice that is on run side by side; a
stream in another voice waits until they end, then switches; one that waits too long is told the
engine is busy (which the worker answers UNAVAILABLE)."""

from __future__ import annotations

import threading

import pytest

from appliance.tts.adapters import EngineBusy, csm


class _Voices(csm.LoraVoices):
    def __init__(self) -> None:
        super().__init__(model=None, loras={})
        self.names = frozenset({"calm", "bright"})
        self.switches: list[str | None] = []

    def _switch(self, name):
        self.switches.append(name)
        self._active = name


def test_streams_in_one_voice_run_together_and_another_voice_waits_its_turn():
    voices = _Voices()
    first, second = voices.using("calm"), voices.using("calm")
    first.__enter__()
    second.__enter__()  # the same voice: no wait
    entered = threading.Event()

    def bright():
        with voices.using("bright"):
            entered.set()

    other = threading.Thread(target=bright)
    other.start()
    assert not entered.wait(0.2)  # waits while calm streams run
    first.__exit__(None, None, None)
    assert not entered.wait(0.2)
    second.__exit__(None, None, None)
    assert entered.wait(5)
    other.join()
    assert voices.switches == ["calm", "bright"]


def test_a_stream_that_waits_too_long_is_told_the_engine_is_busy(monkeypatch):
    monkeypatch.setattr(csm, "VOICE_WAIT_S", 0.1)
    voices = _Voices()
    busy = pytest.raises(EngineBusy, match="another LoRA voice \\(calm\\) is speaking")
    with voices.using("calm"), busy, voices.using("bright"):
        pass
    with voices.using(None):  # the base voice, once nothing else runs
        assert voices.switches[-1] is None


def test_a_model_without_lora_voices_never_waits():
    voices = csm.LoraVoices(model=None, loras={})
    with voices.using(None), voices.using(None):
        pass
