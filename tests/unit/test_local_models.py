"""[models.local]: checkpoints of the operator's own, by path (CSM, XTTS): the settings (TOML or
one JSON environment variable), what the catalog says when a file is missing, and the licence
XTTS's weights ask to be accepted."""

from __future__ import annotations

import json

import pytest

from appliance.config import WorkerSettings, load_settings
from appliance.tts.adapters.xtts import LicenceNotAccepted, XttsAdapter
from appliance.tts.catalog import Catalog, local_specs


def test_local_models_come_from_one_environment_variable(monkeypatch, tmp_path):
    local = {"csm-1b": {"engine": "csm", "path": str(tmp_path), "loras": {"calm": str(tmp_path / "calm")}}}
    monkeypatch.setenv("APPLIANCE_MODELS__LOCAL", json.dumps(local))
    settings = load_settings(WorkerSettings, None)
    entry = settings.models.local["csm-1b"]
    assert (entry.engine, entry.path, entry.language, entry.loras["calm"]) == (
        "csm",
        tmp_path,
        "en-US",
        tmp_path / "calm",
    )


def test_an_unknown_engine_is_a_settings_error():
    with pytest.raises(ValueError, match="engine"):
        load_settings(WorkerSettings, None, models={"local": {"x": {"engine": "tortoise", "path": "/x"}}})


def _catalog(tmp_path, **entry) -> Catalog:
    settings = load_settings(WorkerSettings, None, models={"local": {"mine": {"engine": "csm", **entry}}})
    return Catalog(local_specs(settings.models.local), enabled={"mine"})


def test_a_missing_checkpoint_or_lora_is_named(tmp_path):
    assert "holds no checkpoint (no config.json)" in _catalog(tmp_path, path=str(tmp_path)).missing["mine"]
    (tmp_path / "config.json").write_text("{}")
    missing = _catalog(tmp_path, path=str(tmp_path), loras={"calm": str(tmp_path / "nope")}).missing["mine"]
    assert "LoRA voice 'calm'" in missing and "no adapter_config.json" in missing
    assert "mine" not in _catalog(tmp_path, path=str(tmp_path)).missing


def test_a_missing_engine_package_says_which_extra(tmp_path, monkeypatch):
    import importlib.util

    (tmp_path / "config.json").write_text("{}")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    assert "pip install 'appliance[csm]'" in _catalog(tmp_path, path=str(tmp_path)).missing["mine"]


def test_xtts_weights_load_only_with_their_licence_accepted(tmp_path):
    settings = load_settings(
        WorkerSettings, None, models={"local": {"x": {"engine": "xtts", "path": str(tmp_path)}}}
    )
    [spec] = local_specs(settings.models.local)
    with pytest.raises(LicenceNotAccepted, match='accept_licence = "CPML"'):
        XttsAdapter(spec).load()
