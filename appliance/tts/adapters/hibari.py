"""hibari (``hibari-tts``): a 6 M-parameter English voice distilled from Kokoro-82M, 24 kHz.

Its ONNX graph maps phoneme ids to spectral frames (12.5 ms each) in one call, durations and
pitch included, and a small numpy vocoder (``hibari.dsp``: a pulse train from the pitch, shaped
noise, one inverse STFT) turns the frames into audio. The graph cannot be cut like Piper's: its
prosody and decoder are fused and a sentence's graph call is ~10–70 ms on one core, so there
is nothing to gain. The vocoder, the larger part of the cost, is local (each frame's samples
depend on it and its 3 neighbours, and on the pitch curve's running phase), so a sentence comes
out in windows of frames: the first audio of a sentence waits for its graph call and one small
window, not for the whole sentence's vocoding.

Text goes to phonemes with hibari's own G2P (misaki's lexicon, a tagger and an out-of-vocabulary
net, all inside the wheel); characters it cannot map are dropped, so text with nothing
speakable in it gives no audio, as it does with Piper.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter

log = logging.getLogger(__name__)

CONTEXT_FRAMES = 4  # an n_fft of 4 hops: frames this far apart share no samples
FIRST_WINDOW = 24  # 0.3 s of audio before the rest of the sentence is vocoded
MAX_WINDOW = 160  # later windows double up to 2 s


class HibariAdapter(EngineAdapter):
    engine = "hibari"
    capabilities = ENGINE_CAPABILITIES["hibari"]
    streams_within_segment = True

    def load(self) -> None:
        import hibari
        from hibari.voices import VOICES

        voice = self.spec.model_id.removeprefix("hibari-")
        if voice not in VOICES:
            raise ValueError(f"hibari has no voice {voice!r}; it has {', '.join(VOICES)}")
        if self.device not in ("auto", "cpu"):
            log.info("%s: hibari runs on the CPU (device %r asked)", self.spec.model_id, self.device)
        files = self.spec.locate(self.models_dir)
        threads = self.onnx_threads or 1  # ~100x real time on one core; more threads add little
        self._tts = hibari.Hibari(voice=voice, model=str(files["onnx"]), threads=threads)
        if self._tts.sample_rate != self.spec.sample_rate:
            raise ValueError(
                f"{self.spec.model_id}: hibari makes {self._tts.sample_rate} Hz, catalog says {self.spec.sample_rate}"
            )
        _ = self._tts.g2p  # the lexicon, tagger and OOV net load now, not in the first session
        self._rng = np.random.default_rng()
        self.actual_device = "cpu"
        self.loaded = True
        log.info("loaded %s (hibari voice %s) from %s", self.spec.model_id, voice, files["onnx"])

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        tts = self._tts
        for phonemes in tts.phonemize(text):
            ids = tts.ids(phonemes)
            if len(ids) < 3:  # nothing but the two pads: no character of it could be mapped
                continue
            out = tts.sess.run(
                None, {"ids": np.asarray([ids], np.int64), "speed": np.asarray([1.0], np.float32)}
            )
            for audio in vocode_in_windows(*(o[0] for o in out), self._rng):
                yield np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)

    def unload(self) -> None:
        self._tts = None
        self.loaded = False


def vocode_in_windows(lh, th, ln, lr, phi, f0, rng) -> Iterator[np.ndarray]:
    """``hibari.dsp.synth`` of the graph's outputs (each [bins, F]; f0 [F]), window by window.

    The pulse train is made once for the whole sentence (its phase runs on from frame to frame);
    each window is vocoded with ``CONTEXT_FRAMES`` of context on both sides, which are thrown
    away, so the joined windows are the whole-sentence vocoding (up to the noise's draw)."""
    from hibari import dsp

    frames = lh.shape[1]
    # The STFT of frame k is centred on sample k*hop of the reflect-padded pulse train.
    padded = np.pad(dsp.pulses(f0), dsp.N_FFT // 2, mode="reflect")
    start, size = 0, FIRST_WINDOW
    while start < frames:
        end = min(frames, start + size)
        left, right = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
        audio = _synth_window(dsp, padded, left, right, lh, th, ln, lr, phi, rng)
        skip = (start - left) * dsp.HOP
        yield audio[skip : skip + (end - start) * dsp.HOP]
        start, size = end, min(MAX_WINDOW, size * 2)


def _synth_window(dsp, padded, left, right, lh, th, ln, lr, phi, rng) -> np.ndarray:
    """``dsp.synth`` for frames [left, right) given the sentence's padded pulse train."""
    hop, n_fft = dsp.HOP, dsp.N_FFT
    segment = padded[left * hop : right * hop + n_fft]
    count = right - left
    windows = np.lib.stride_tricks.sliding_window_view(segment, n_fft)[::hop][:count] * dsp.WIN_SRC
    spec = np.ascontiguousarray(dsp.rfft(windows, 1).T)
    cut = slice(left, right)
    lh, th, ln, lr, phi = lh[:, cut], th[:, cut], ln[:, cut], lr[:, cut], phi[:, cut]
    rot = np.empty(lh.shape, np.complex64)
    c = np.tanh(th) * np.pi
    np.cos(c, out=rot.real)
    np.sin(c, out=rot.imag)
    rot *= dsp.ex(lh)
    spec *= rot
    z = rng.standard_normal((lh.shape[0], 2 * count), dtype=np.float32).view(np.complex64)
    z *= dsp.ex(ln)
    spec += z
    np.cos(phi, out=rot.real)
    np.sin(phi, out=rot.imag)
    rot *= dsp.ex(lr)
    spec += rot
    return dsp.ola(spec)
