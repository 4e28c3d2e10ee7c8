"""docs/configuration.md documents every setting of both services, and nothing else.

The doc has one table per service, each after a marker line ``<!-- settings: orchestrator -->`` or
``<!-- settings: tts-worker -->``. A row is ``| `section.key` | type | `default` | `APPLIANCE_…` | meaning |``;
top-level keys have no section. The settings are walked through ``model_fields`` (recursively into
sections), so a section that is a model defined elsewhere is still walked.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from appliance.config import SERVICE_KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MARKER = re.compile(r"^<!-- settings: ([a-z-]+) -->\s*$")
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|")


def _section_model(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def settings_of(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """``section.key`` → the field's default, for every leaf setting under ``model``."""
    out: dict[str, object] = {}
    for name, field in model.model_fields.items():
        section = _section_model(field.annotation)
        if section is not None:
            out.update(settings_of(section, f"{prefix}{name}."))
        else:
            out[prefix + name] = field.get_default(call_default_factory=True)
    return out


def toml_default(value: object) -> str:
    """A default as the doc writes it: TOML syntax, or ``(none)`` for an absent value."""
    if value is None:
        return "(none)"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_default(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def env_var(key: str) -> str:
    return "APPLIANCE_" + key.replace(".", "__").upper()


def type_name(annotation) -> str:
    """A short, readable name of a setting's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " \\| ".join(type_name(a) for a in inner) + (" or absent" if len(inner) < len(args) else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "secret",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def doc_tables() -> dict[str, dict[str, list[str]]]:
    """service → ``section.key`` → the row's cells, as docs/configuration.md has them."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in DOC.read_text().splitlines():
        marker = MARKER.match(line)
        if marker:
            current = tables.setdefault(marker.group(1), {})
            continue
        row = ROW.match(line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} is documented twice"
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current[row.group(1)] = cells
        elif current is not None and line.strip() and not line.startswith("|"):
            current = None  # the table ended
    return tables


def test_every_service_has_a_table():
    assert set(doc_tables()) == set(SERVICE_KINDS)


@pytest.mark.parametrize("kind", sorted(SERVICE_KINDS))
def test_every_setting_is_documented_and_every_documented_key_exists(kind):
    real = settings_of(SERVICE_KINDS[kind])
    documented = doc_tables().get(kind, {})
    missing = sorted(set(real) - set(documented))
    stale = sorted(set(documented) - set(real))
    assert not missing, f"docs/configuration.md lacks these {kind} settings: {', '.join(missing)}"
    assert not stale, f"docs/configuration.md names {kind} settings that no longer exist: {', '.join(stale)}"


@pytest.mark.parametrize("kind", sorted(SERVICE_KINDS))
def test_documented_defaults_and_env_vars_match(kind):
    real = settings_of(SERVICE_KINDS[kind])
    wrong = []
    for key, cells in doc_tables().get(kind, {}).items():
        if key not in real:
            continue
        assert len(cells) == 5, f"{key}: a row has 5 cells (key, type, default, env, meaning): {cells}"
        default, env, meaning = cells[2].strip("`"), cells[3].strip("`"), cells[4]
        if default != toml_default(real[key]):
            wrong.append(f"{key}: default {default} in the doc, {toml_default(real[key])} in the code")
        if env != env_var(key):
            wrong.append(f"{key}: env {env} in the doc, {env_var(key)} is what is read")
        if not meaning:
            wrong.append(f"{key}: no meaning given")
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_nested_sections():
    """The walk itself: a section's keys come out dotted, so the checks above are not vacuous."""
    orchestrator = settings_of(SERVICE_KINDS["orchestrator"])
    worker = settings_of(SERVICE_KINDS["tts-worker"])
    assert orchestrator["vad.endpoint_silence_ms"] == 300
    assert orchestrator["playback.tts_retry_s"] == 5.0
    assert worker["models.ttl_s"] == 600.0
    assert "discovery.heartbeat_s" in worker and "discovery.heartbeat_s" not in orchestrator
