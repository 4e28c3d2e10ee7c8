"""XTTS v2 through ``coqui-tts`` (the maintained fork of Coqui TTS): a GPT-2 writes audio tokens
from the text and a speaker's conditioning, and a HiFi-GAN decoder turns their latents into
24 kHz audio, speaking as the reference clip does (zero-shot).

A speaker is a voice prompt of the model's config (a clip; XTTS does not need its words). Its
conditioning (the GPT's conditioning latents and the decoder's speaker embedding) is computed
once, when the model loads, and kept. Streaming is XTTS's own: ``inference_stream`` decodes every
``STREAM_TOKENS`` audio tokens, so the first audio comes after that many tokens, not after the
sentence; closing the stream stops the GPT at its next token.

The weights are under the Coqui Public Model License (non-commercial use only): the model loads
only where its config says ``accept_licence = "CPML"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter, InputRejected

log = logging.getLogger(__name__)

LICENCE = "CPML"
STREAM_TOKENS = 8  # audio tokens (46 ms each) decoded together: the first audio after 0.37 s of speech


class LicenceNotAccepted(ValueError):
    pass


class XttsAdapter(EngineAdapter):
    engine = "xtts"
    capabilities = ENGINE_CAPABILITIES["xtts"]
    streams_within_segment = True
    chunks_made = 0  # audio chunks made by this adapter, all streams together

    def load(self) -> None:
        if self.spec.licence_accepted != LICENCE:
            raise LicenceNotAccepted(
                f"{self.spec.model_id}: XTTS v2's weights are under the Coqui Public Model License "
                f"(non-commercial use only); to load them, accept it in the worker's config: "
                f'[models.local.{self.spec.model_id}] accept_licence = "{LICENCE}"'
            )
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        files = self.spec.locate(self.models_dir)
        directory = files["dir"]
        cuda = self.device in ("auto", "cuda", "tensorrt") and torch.cuda.is_available()
        self.actual_device = "cuda" if cuda else "cpu"
        config = XttsConfig()
        config.load_json(str(directory / "config.json"))
        model = Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=str(directory), eval=True)
        self._model = model.to(self.actual_device)
        self._max_text_tokens = config.model_args.gpt_max_text_tokens
        self._language = self.spec.language.split("-")[0]
        if self._language not in config.languages:
            raise ValueError(
                f"{self.spec.model_id}: language {self.spec.language} is not one of the model's "
                f"({', '.join(config.languages)})"
            )
        self._speakers = {}
        for key, path in files.items():
            if key.startswith("prompt:"):
                with torch.inference_mode():
                    self._speakers[key.removeprefix("prompt:")] = self._model.get_conditioning_latents(
                        audio_path=[str(path)]
                    )
        if not self._speakers:
            raise ValueError(
                f"{self.spec.model_id}: XTTS speaks as a reference clip does; give it at least one "
                "voice prompt ([models.local.ID.voice_prompts])"
            )
        self.loaded = True
        log.info(
            "loaded %s (XTTS v2) from %s on %s, speakers: %s",
            self.spec.model_id,
            directory,
            self.actual_device,
            ", ".join(self._speakers),
        )

    def unload(self) -> None:
        self._model = None
        self._speakers = {}
        self.loaded = False

    def _speaker(self, options: Mapping[str, str]) -> str:
        """The session's speaker: its ``voice_prompt``, or the model's only one."""
        name = options.get("voice_prompt")
        if name is None and len(self._speakers) == 1:
            return next(iter(self._speakers))
        return name

    def check_options(self, options: Mapping[str, str]) -> None:
        name = self._speaker(options)
        known = ", ".join(sorted(self._speakers))
        if name is None:
            raise InputRejected(
                f"{self.spec.model_id} speaks as a voice prompt does: pick one with the option "
                f"voice_prompt (it has: {known})"
            )
        if name not in self._speakers:
            raise InputRejected(f"{self.spec.model_id} has no voice prompt {name!r} (it has: {known})")

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        return self.synthesize_with(text, {})

    def synthesize_with(self, text: str, options: Mapping[str, str]) -> Iterator[np.ndarray]:
        import torch

        text = text.strip()
        name = self._speaker(options) or next(iter(self._speakers))  # warm-up: any speaker
        if not text:
            return
        tokens = len(self._model.tokenizer.encode(text.lower(), lang=self._language))
        if tokens >= self._max_text_tokens:
            raise InputRejected(
                f"text too long for {self.spec.model_id}: {tokens} tokens, at most {self._max_text_tokens - 1}"
            )
        latents, speaker = self._speakers[name]
        stream = self._model.inference_stream(
            text, self._language, latents, speaker, stream_chunk_size=STREAM_TOKENS
        )
        try:
            while True:
                # Each step in a mode of its own: torch's modes are per thread, and the worker may
                # run the next step on another thread than this one.
                with torch.inference_mode():
                    chunk = next(stream, None)
                if chunk is None:
                    return
                self.chunks_made += 1
                yield np.clip(chunk.float().cpu().numpy(), -1.0, 1.0)
        finally:
            stream.close()
