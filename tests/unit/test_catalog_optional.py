"""Optional models (hibari, Kokoro): served only where installed and enabled, else a NOT_FOUND reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.tts.catalog import Catalog, ModelSpec, UnknownModel


def _missing_package(_dir):
    raise ModuleNotFoundError("No module named 'nope'", name="nope")


def _missing_file(_dir):
    raise FileNotFoundError("voice-b is not installed: run `appliance models fetch voice-b`")


def _present(_dir):
    return {"onnx": Path(__file__)}


SPECS = (
    ModelSpec("base", engine="mock", language="en", sample_rate=24000),
    ModelSpec("voice-a", engine="eng", language="ja-JP", sample_rate=24000, optional=True, locate=_present),
    ModelSpec(
        "voice-b", engine="eng", language="ja-JP", sample_rate=24000, optional=True, locate=_missing_file
    ),
    ModelSpec(
        "voice-c", engine="eng", language="en", sample_rate=24000, optional=True, locate=_missing_package
    ),
)


def test_installed_optional_models_are_served_and_missing_ones_say_why():
    catalog = Catalog(SPECS)
    assert catalog.ids() == ["base", "voice-a"]
    with pytest.raises(UnknownModel) as info:
        catalog.get("voice-b")
    assert "not served here: voice-b is not installed: run `appliance models fetch voice-b`" in str(
        info.value
    )
    assert "served: base, voice-a" in str(info.value)
    with pytest.raises(
        UnknownModel, match=r"its engine package is not installed \(nope; pip install 'appliance\[eng\]'\)"
    ):
        catalog.get("voice-c")
    with pytest.raises(UnknownModel, match="unknown model id 'voice-z'; known: base, voice-a"):
        catalog.get("voice-z")


def test_a_worker_serves_only_the_optional_models_it_names():
    catalog = Catalog(SPECS, enabled={"base"})
    assert catalog.ids() == ["base"]  # built-in models are always served
    with pytest.raises(UnknownModel, match=r"add it to models.serve"):
        catalog.get("voice-a")
    assert Catalog(SPECS, enabled={"voice-a"}).ids() == ["base", "voice-a"]
