"""Which onnxruntime execution provider a model gets: TensorRT (fp16, engines cached), then CUDA,
then the CPU, as far as the model's ``device`` setting and this host allow.

``device``: ``cpu`` is the CPU only; ``cuda`` is CUDA, else the CPU; ``tensorrt`` and ``auto`` try
TensorRT first, then CUDA, then the CPU. A faster provider is skipped when onnxruntime does not
offer it (the CPU wheel, or onnxruntime-gpu without a GPU) or, for TensorRT, when its libraries
are not found; a provider that fails to initialise falls through to the next. One log line per
model says which provider it got and why each faster one was skipped.

TensorRT builds an engine per model, GPU and TensorRT version on first use (minutes); the engines
are cached under ``trt_cache_root()``/KEY, KEY naming all three (``engine_cache_key``), so a driver
or TensorRT upgrade, or another GPU, never picks up a stale engine. ``appliance models
build-engines`` builds them ahead of time.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
DEFAULT_TRT_CACHE = Path("/var/lib/appliance/cache/trt")


@dataclass(frozen=True)
class Host:
    """What this host offers: onnxruntime's providers, TensorRT's version, the GPU's name."""

    available: tuple[str, ...]
    trt_version: str | None = None
    gpu_name: str = ""


@dataclass
class Choice:
    providers: list  # onnxruntime's providers argument, best first, the CPU always last
    device: str  # "tensorrt", "cuda" or "cpu": the best one in the list
    skipped: dict[str, str] = field(default_factory=dict)  # provider -> why it is not used

    def describe(self, label: str) -> str:
        why = "; ".join(f"{name} skipped: {reason}" for name, reason in self.skipped.items())
        return f"{label}: onnxruntime provider {provider_name(self.providers[0])}" + (
            f" ({why})" if why else ""
        )


def provider_name(provider) -> str:
    """The name of an entry of onnxruntime's providers list (a name, or a (name, options) pair)."""
    return provider[0] if isinstance(provider, tuple) else provider


def engine_cache_key(model_sha256: str, gpu_name: str, trt_version: str) -> str:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return f"{model_sha256[:16]}-{gpu}-trt{trt_version}"


def choose(
    device: str, host: Host, *, model_sha256: str = "", cache_root: Path = DEFAULT_TRT_CACHE
) -> Choice:
    """The providers for ``device`` on ``host`` (pure: no GPU, no files touched)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    skipped: dict[str, str] = {}
    chain: list = []
    if device in ("auto", "tensorrt"):
        if TRT not in host.available:
            skipped[TRT] = "onnxruntime has no TensorRT provider here (it needs onnxruntime-gpu)"
        elif host.trt_version is None:
            skipped[TRT] = "the TensorRT 10 libraries (libnvinfer) are not installed"
        else:
            cache = cache_root / engine_cache_key(model_sha256, host.gpu_name, host.trt_version)
            options = {
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }
            chain.append((TRT, options))
    if device != "cpu":
        if CUDA in host.available:
            chain.append((CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            skipped[CUDA] = "onnxruntime has no CUDA provider here (CPU wheel, or no GPU)"
    chain.append(CPU)
    return Choice(chain, _DEVICE_OF.get(provider_name(chain[0]), "cpu"), skipped)


_DEVICE_OF = {TRT: "tensorrt", CUDA: "cuda"}


def detect_host() -> Host:
    try:
        import onnxruntime
    except ImportError:
        return Host((CPU,))
    available = tuple(onnxruntime.get_available_providers())
    if CUDA not in available and TRT not in available:
        return Host(available)
    return Host(available, _trt_version(), _gpu_name())


def _trt_version() -> str | None:
    try:
        import tensorrt  # a GPU host may have the Python bindings

        return str(tensorrt.__version__).split(".")[0]
    except ImportError:
        pass
    found = ctypes.util.find_library("nvinfer")  # e.g. libnvinfer.so.10
    if found is None:
        return None
    match = re.search(r"\.so\.(\d+)", found)
    return match.group(1) if match else "10"


def _gpu_name() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 -- no NVML: the key still separates TensorRT versions
        return os.environ.get("APPLIANCE_GPU_NAME", "gpu0")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def trt_cache_root() -> Path:
    return Path(os.environ.get("APPLIANCE_TRT_CACHE", DEFAULT_TRT_CACHE))


def open_session(model: str | Path, device: str, threads: int, *, label: str, host: Host | None = None):
    """An onnxruntime session on the best provider ``device`` allows; returns (session, device).
    A provider that fails to initialise is logged and the next one tried."""
    import onnxruntime

    host = host or detect_host()
    sha = file_sha256(model) if device in ("auto", "tensorrt") and TRT in host.available else ""
    choice = choose(device, host, model_sha256=sha, cache_root=trt_cache_root())
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    chain = list(choice.providers)
    while True:
        name = provider_name(chain[0])
        try:
            if name == TRT:
                Path(chain[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=chain)
        except Exception as exc:
            if name == CPU:
                raise
            choice.skipped[name] = f"failed to initialise ({exc})"
            chain = chain[1:]
            continue
        got = session.get_providers()[0]
        if got != name:
            choice.skipped[name] = "onnxruntime fell back from it when creating the session"
        choice.providers = [got]
        log.info(choice.describe(label))
        return session, _DEVICE_OF.get(got, "cpu")
