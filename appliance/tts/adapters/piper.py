"""Piper (VITS, ONNX) through ``piper-tts``. One chunk per text segment: Piper only streams
per sentence, so the worker hands it sentences (and clauses of a long first sentence)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import numpy as np

from appliance.tts.adapters.base import EngineAdapter

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class PiperAdapter(EngineAdapter):
    engine = "piper"

    def load(self) -> None:
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        files = self.spec.locate(self.models_dir)
        use_cuda = self.device == "cuda" or (self.device == "auto" and cuda_available())
        with open(files["config"], encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        if config.sample_rate != self.spec.sample_rate:
            raise ValueError(f"{self.spec.model_id}: voice is {config.sample_rate} Hz, catalog says {self.spec.sample_rate}")
        # 0 (adaptive): a call running alone gets every core but one — the event loop keeps one
        # so frame pacing and control acks never wait on the model — and calls that overlap run
        # on one thread each, which beats all of them fighting over every core.
        adaptive = self.onnx_threads == 0 and not use_cuda
        solo_threads = max(1, (os.cpu_count() or 2) - 1) if adaptive else self.onnx_threads
        self._solo = PiperVoice(session=_session(files["onnx"], solo_threads, use_cuda), config=config)
        self._shared = self._solo
        if adaptive and solo_threads > 1:
            self._shared = PiperVoice(session=_session(files["onnx"], 1, use_cuda), config=config)
        # Piper would peak-normalise every sentence to full scale; the worker does loudness itself.
        self._config = SynthesisConfig(normalize_audio=False)
        self.actual_device = "cuda" if use_cuda else "cpu"
        self.loaded = True
        log.info("loaded %s on %s from %s", self.spec.model_id, self.actual_device, files["onnx"])

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        voice = self._shared if self.contended() else self._solo
        for chunk in voice.synthesize(text, syn_config=self._config):
            yield chunk.audio_float_array

    def unload(self) -> None:
        self._solo = self._shared = None
        self.loaded = False


def _session(path, threads: int, use_cuda: bool):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else []
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers + ["CPUExecutionProvider"])
