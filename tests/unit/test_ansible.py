"""The Ansible roles without a host: the playbook passes `--syntax-check` with each example inventory;
every role has the conventional layout and declares its defaults in meta/argument_specs.yml; every
module is named by its FQCN; every command is idempotent (creates/removes/changed_when); every file
a task copies or templates exists; every notified handler exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (comes with ansible-core) is not installed")

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
ROLES = sorted(p for p in (ANSIBLE / "roles").iterdir() if p.is_dir())
EXPECTED_ROLES = {"base", "models", "redis", "livekit", "caddy", "orchestrator", "tts_workers", "gpu"}
INVENTORIES = sorted((ANSIBLE / "inventory").glob("*.yml"))


def _playbook_bin() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


def _load(path: Path):
    return yaml.safe_load(path.read_text()) or []


def _task_files() -> list[Path]:
    return sorted([*ANSIBLE.glob("roles/*/tasks/*.yml"), *ANSIBLE.glob("roles/*/handlers/*.yml")])


def _tasks(items):
    """Every task in a task list, blocks flattened."""
    for item in items or []:
        if "block" in item:
            yield from _tasks(item["block"])
            yield from _tasks(item.get("rescue"))
            yield from _tasks(item.get("always"))
        else:
            yield item


def _all_tasks():
    for path in _task_files():
        for task in _tasks(_load(path)):
            yield path, task
    for play in _load(ANSIBLE / "site.yml"):
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in _tasks(play.get(section)):
                yield ANSIBLE / "site.yml", task


def _keywords() -> set[str]:
    Task = pytest.importorskip("ansible.playbook.task", reason="ansible-core is not installed").Task
    return set(Task.fattributes) | {"with_items", "with_dict", "with_fileglob", "local_action", "listen"}


def _module(task: dict, keywords: set[str]) -> str:
    mods = [k for k in task if k not in keywords]
    assert len(mods) == 1, f"task {task.get('name')!r}: cannot tell its module from {mods}"
    return mods[0]


@pytest.mark.skipif(_playbook_bin() is None, reason="ansible-playbook (ansible-core) is not installed")
@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_syntax_check_with_each_example_inventory(inventory, tmp_path):
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [_playbook_bin(), "-i", str(inventory), "--syntax-check", "site.yml"],
        cwd=ANSIBLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_inventories_for_a_jetson_and_a_desktop_gpu():
    assert {p.name for p in INVENTORIES} >= {"jetson.yml", "desktop-gpu.yml"}


def test_site_runs_every_role():
    appliance, _tts_hosts = _load(ANSIBLE / "site.yml")
    names = {r["role"] if isinstance(r, dict) else r for r in appliance["roles"]}
    assert names == EXPECTED_ROLES == {p.name for p in ROLES}
    assert appliance["hosts"] == "all:!tts_hosts"


def test_hosts_of_group_tts_hosts_run_only_their_workers():
    """The second play: the roles a worker box needs, after the appliance host (which issues its
    certificates and Redis users); the orchestrator's restarts, notified by the shared tasks, are
    answered there without a unit to restart."""
    appliance, tts_hosts = _load(ANSIBLE / "site.yml")
    assert tts_hosts["hosts"] == "tts_hosts" and tts_hosts["vars"] == {"appliance_tts_host": True}
    roles = [r["role"] if isinstance(r, dict) else r for r in tts_hosts["roles"]]
    assert roles == ["base", "gpu", "models", "tts_workers"]
    assert {h["name"] for h in tts_hosts["handlers"]} == {
        "restart appliance-orchestrator",
        "restart appliance-wyoming",
    }
    assert all("ansible.builtin.debug" in h for h in tts_hosts["handlers"])
    assert tts_hosts["post_tasks"] == appliance["post_tasks"]


@pytest.mark.parametrize(
    "role", ROLES, ids=lambda p: f"role-{p.name}"
)  # an id "gpu" would read as the gpu mark
def test_role_layout_and_argument_specs_cover_defaults(role):
    for part in (
        "defaults/main.yml",
        "tasks/main.yml",
        "handlers/main.yml",
        "meta/main.yml",
        "meta/argument_specs.yml",
    ):
        assert (role / part).is_file(), f"{role.name}: no {part}"
    options = _load(role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    defaults = _load(role / "defaults/main.yml") or {}
    undeclared = sorted(set(defaults) - set(options))
    assert not undeclared, f"{role.name}: defaults not in meta/argument_specs.yml: {undeclared}"
    for name in defaults:
        assert name.startswith("appliance_"), f"{role.name}: {name} is not namespaced"


def test_every_module_is_named_by_its_fqcn():
    keywords = _keywords()
    bare = [
        f"{p.relative_to(ANSIBLE)}: {task.get('name')!r} uses {mod!r}"
        for p, task in _all_tasks()
        if not (mod := _module(task, keywords)).startswith("ansible.builtin.")
    ]
    assert not bare, "\n".join(bare)


def test_every_command_is_idempotent():
    keywords = _keywords()
    loose = []
    for path, task in _all_tasks():
        mod = _module(task, keywords)
        if mod.rsplit(".", 1)[-1] in ("command", "shell", "raw", "script"):
            args = task[mod] if isinstance(task[mod], dict) else {}
            if not ({"creates", "removes"} & set(args) or "changed_when" in task):
                loose.append(f"{path.relative_to(ANSIBLE)}: {task.get('name')!r}")
    assert not loose, "commands without creates/removes/changed_when:\n" + "\n".join(loose)


def test_templates_and_copied_files_exist():
    keywords = _keywords()
    missing = []
    for path, task in _all_tasks():
        mod = _module(task, keywords).rsplit(".", 1)[-1]
        args = task[_module(task, keywords)]
        if not isinstance(args, dict) or "src" not in args:
            continue
        src = args["src"]
        role = path.parents[1]
        if mod == "template":
            if not (role / "templates" / src).is_file():
                missing.append(f"{role.name}: templates/{src}")
        elif mod == "copy" and "{{ appliance_source_dir }}/" in src:
            rel = src.split("{{ appliance_source_dir }}/", 1)[1]
            if not (ROOT / rel).is_file():
                missing.append(f"{role.name}: {rel}")
    assert not missing, missing


def test_every_notified_handler_exists():
    handlers = set()
    for path in ANSIBLE.glob("roles/*/handlers/main.yml"):
        for h in _load(path):
            handlers |= {h["name"], *([h["listen"]] if "listen" in h else [])}
    notified = set()
    for _, task in _all_tasks():
        n = task.get("notify", [])
        notified |= {n} if isinstance(n, str) else set(n)
    assert notified and notified <= handlers, notified - handlers


def test_units_installed_are_the_ones_in_systemd_dir():
    """The roles copy units from systemd/ (one source of truth with the unit tests)."""
    text = "\n".join(p.read_text() for p in _task_files())
    for unit in (
        "appliance-orchestrator.service",
        "appliance-wyoming.service",
        "appliance-tts@.service",
        "appliance.target",
    ):
        assert f"{{{{ appliance_source_dir }}}}/systemd/{unit}" in text, unit
        assert (ROOT / "systemd" / unit).is_file()


def test_secrets_are_never_world_readable():
    keywords = _keywords()
    for path, task in _all_tasks():
        args = task[_module(task, keywords)]
        if isinstance(args, dict) and re.search(
            r"redis\.(env|password)|appliance\.conf$|\.password$|aclfile|\.request$|livekit.secret|keys\.yaml$",
            str(args.get("dest", "")),
        ):
            assert args.get("mode") in ("0600", "0640"), (
                f"{path.name}: {task.get('name')} mode {args.get('mode')}"
            )


def test_no_placeholder_addresses_in_inventories_or_defaults():
    """Whatever an example inventory or a default names must exist: no example.org repositories."""
    placeholder = re.compile(r"example\.(com|org|net)|github\.com/example\b")
    found = [
        f"{p.relative_to(ANSIBLE)}:{n}: {line.strip()}"
        for p in [*INVENTORIES, *ANSIBLE.glob("roles/*/defaults/main.yml")]
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if placeholder.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_model_the_roles_install_is_in_models_lock():
    import tomllib

    locked = {
        m["id"] for m in tomllib.loads((ROOT / "appliance/modelstore/models.lock").read_text())["model"]
    }
    lists = {"roles/models/defaults": _load(ANSIBLE / "roles/models/defaults/main.yml")["appliance_models"]}
    for inv in INVENTORIES:
        models = _load(inv)["all"].get("vars", {}).get("appliance_models")
        if models is not None:
            lists[inv.name] = models
    unknown = {where: sorted(set(ids) - locked) for where, ids in lists.items() if set(ids) - locked}
    assert not unknown, unknown
    llm = _load(ANSIBLE / "roles/base/defaults/main.yml")["appliance_llm"]
    assert llm == {"kind": "embedded", "model": "smollm2-135m-instruct"} and llm["model"] in locked


def test_without_a_pip_spec_the_playbook_installs_a_wheel_of_its_own_checkout():
    """The shipped defaults install the checkout the playbook runs from: no pip spec is required,
    and the wheel is built once, on the controller, from the tree the roles live in."""
    assert _load(ANSIBLE / "roles/base/defaults/main.yml")["appliance_pip_spec"] == ""
    preflight = str(_load(ANSIBLE / "roles/base/tasks/preflight.yml"))
    assert "appliance_pip_spec" not in preflight, "preflight still requires appliance_pip_spec"
    (include,) = [
        t
        for t in _tasks(_load(ANSIBLE / "roles/base/tasks/venv.yml"))
        if t.get("ansible.builtin.include_tasks") == "checkout_wheel.yml"
    ]
    assert include["when"] == "appliance_pip_spec | length == 0"
    keywords = _keywords()
    tasks = list(_tasks(_load(ANSIBLE / "roles/base/tasks/checkout_wheel.yml")))
    (build,) = [t for t in tasks if "wheel" in t.get(_module(t, keywords), {}).get("argv", [])]
    argv = build["ansible.builtin.command"]["argv"]
    assert argv[-1] == "{{ appliance_source_dir }}" and "--no-deps" in argv
    assert (build["delegate_to"], build["run_once"], build["become"]) == ("localhost", True, False)
    # The same tree gives the same wheel bytes, so a rerun copies nothing to the host.
    assert "SOURCE_DATE_EPOCH" in build["environment"]
    copies = [t for t in tasks if _module(t, keywords) == "ansible.builtin.copy" and "delegate_to" not in t]
    assert len(copies) == 1 and copies[0]["ansible.builtin.copy"]["dest"].startswith("/opt/appliance/wheels/")
    defaults_source = _load(ANSIBLE / "roles/base/defaults/main.yml")["appliance_source_dir"]
    assert defaults_source == "{{ (role_path ~ '/../../..') | realpath }}"
    assert (ANSIBLE / "roles/base/../../..").resolve() == ROOT
