"""Loading a service's settings from defaults, its TOML file, APPLIANCE_* variables and flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from appliance.config.base import ConfigError, _ServiceSettings, _toml_path
from appliance.config.orchestrator import OrchestratorSettings
from appliance.config.worker import WorkerSettings

SERVICE_KINDS: dict[str, type[_ServiceSettings]] = {
    "tts-worker": WorkerSettings,
    "orchestrator": OrchestratorSettings,
}


def load_settings(cls: type[_ServiceSettings], path: str | Path | None = None, **overrides: Any):
    """Build settings from defaults < TOML file < APPLIANCE_* env < ``overrides`` (None values dropped)."""
    file = Path(path) if path is not None else None
    if file is not None:
        _check_toml(file)
    token = _toml_path.set(file)
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None
    finally:
        _toml_path.reset(token)


def guess_kind(path: str | Path) -> str:
    """The service a config file is for: files under a ``tts/`` folder configure workers."""
    p = Path(path)
    if p.parent.name == "tts":
        return "tts-worker"
    if p.stem == "orchestrator" and "orchestrator" in SERVICE_KINDS:
        return "orchestrator"
    raise ConfigError(f"{p}: cannot tell which service this file configures; pass --kind")


def _check_toml(file: Path) -> None:
    try:
        with file.open("rb") as fh:
            tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def _describe(exc: ValidationError, file: Path | None) -> str:
    where = f"{file}: " if file else ""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}{key}: {msg}")
    return "\n".join(lines)
