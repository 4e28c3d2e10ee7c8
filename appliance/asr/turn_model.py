"""Semantic end-of-turn: Smart Turn v3.2 (an int8 ONNX Whisper-encoder classifier) judges from the
audio of a turn so far whether the speaker has finished, or only paused.

Input: the last 8 s of the turn (16 kHz float32), zeros in front when shorter, as Whisper-style
log-mel features of shape (1, 80, 800) named ``input_features``; output: the probability that the
turn is complete (> 0.5: complete). Each call runs on this model's own thread, never on the loop.
The model file comes from the model store (``appliance models fetch``: ``smart-turn-v3.2``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.audio.log_mel import SAMPLE_RATE, log_mel
from appliance.modelstore import LockError, find_installed, load_lock, packaged_file

log = logging.getLogger(__name__)

MODEL_ID = "smart-turn-v3.2"
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
WINDOW_S = 8
THRESHOLD = 0.5


@dataclass(frozen=True)
class TurnVerdict:
    complete: bool
    probability: float
    ms: float  # time the call took (features and inference)


def locate_turn_model(path: str | Path | None = None, models_dir: str | Path | None = None) -> Path | None:
    """The model file: ``path`` if given, else the model store's copy, else the file in the
    installed package that ships it (``pipecat-ai``, which `make run` installs without its
    dependencies); None when it is in none of them."""
    if path is not None:
        return Path(path) if Path(path).is_file() else None
    installed = find_installed(MODEL_ID, models_dir)
    if installed is not None:
        return installed / MODEL_FILE
    try:
        locked = load_lock().get(MODEL_ID).file(MODEL_FILE)
    except (LockError, KeyError):
        return None
    return packaged_file(locked)


def features(audio: np.ndarray) -> np.ndarray:
    """The model's input for a turn's audio: the last 8 s, zero-padded in front, as (1, 80, 800)."""
    n = WINDOW_S * SAMPLE_RATE
    x = np.asarray(audio, dtype=np.float32)[-n:]
    lead = n - x.size
    if lead:
        x = np.concatenate([np.zeros(lead, dtype=np.float32), x])
    return log_mel(x, silent_lead=lead)[None, :, :]


class TurnModel:
    """Smart Turn on onnxruntime, one intra-op thread by default (it shares the box with ASR)."""

    def __init__(self, path: str | Path, *, threads: int = 1, threshold: float = THRESHOLD) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.path = Path(path)
        self.threshold = threshold
        self.last_ms: float | None = None  # the latest call's time
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-model")
        self.judge_sync(np.zeros(SAMPLE_RATE, dtype=np.float32))  # warm-up
        log.info("turn model %s loaded in %.0f ms", self.path.name, (time.perf_counter() - started) * 1000)

    def judge_sync(self, audio: np.ndarray) -> TurnVerdict:
        started = time.perf_counter()
        (probs,) = self._session.run(None, {"input_features": features(audio)})[:1]
        p = float(np.asarray(probs).reshape(-1)[0])
        self.last_ms = (time.perf_counter() - started) * 1000
        return TurnVerdict(p > self.threshold, p, self.last_ms)

    async def judge(self, audio: np.ndarray) -> TurnVerdict:
        """Is the turn whose audio this is complete? Off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.judge_sync, audio)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def load_turn_model(
    path: str | Path | None = None, models_dir: str | Path | None = None, threads: int = 1
) -> TurnModel | None:
    """The turn model, or None (with one log line saying so) when it is not installed or fails to load."""
    found = locate_turn_model(path, models_dir)
    if found is None:
        log.warning(
            "turn model %s not installed (appliance models fetch %s): end of turn falls back to silence mode",
            MODEL_ID,
            MODEL_ID,
        )
        return None
    try:
        return TurnModel(found, threads=threads)
    except Exception as exc:  # noqa: BLE001 (a broken file must not stop the orchestrator)
        log.warning("turn model %s failed to load (%s): end of turn falls back to silence mode", found, exc)
        return None
