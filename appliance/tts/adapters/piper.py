"""Piper (VITS, ONNX) through ``piper-tts``. One chunk per text segment: Piper only streams
per sentence, so the worker hands it sentences (and clauses of a long first sentence)."""

from __future__ import annotations

import json
import logging
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
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        files = self.spec.locate(self.models_dir)
        use_cuda = self.device == "cuda" or (self.device == "auto" and cuda_available())
        options = onnxruntime.SessionOptions()
        if self.onnx_threads:
            # Several sessions synthesise at once on few cores: one thread per call, and the
            # worker runs as many calls in parallel as it has synthesis threads.
            options.intra_op_num_threads = self.onnx_threads
            options.inter_op_num_threads = 1
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else []
        session = onnxruntime.InferenceSession(
            str(files["onnx"]), sess_options=options, providers=providers + ["CPUExecutionProvider"]
        )
        with open(files["config"], encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        self._voice = PiperVoice(session=session, config=config)
        # Piper would peak-normalise every sentence to full scale; the worker does loudness itself.
        self._config = SynthesisConfig(normalize_audio=False)
        self.actual_device = "cuda" if use_cuda else "cpu"
        rate = self._voice.config.sample_rate
        if rate != self.spec.sample_rate:
            raise ValueError(f"{self.spec.model_id}: voice is {rate} Hz, catalog says {self.spec.sample_rate}")
        self.loaded = True
        log.info("loaded %s on %s", self.spec.model_id, self.actual_device)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self._voice.synthesize(text, syn_config=self._config):
            yield chunk.audio_float_array

    def unload(self) -> None:
        self._voice = None
        self.loaded = False
