"""Engine audio -> 48 kHz PCM16 20 ms frames: loudness, resampling, framing."""

from __future__ import annotations

import numpy as np

from appliance.audio._arrays import as_mono_float32, finite_or_zero
from appliance.audio.framing import OUTPUT_RATE, FrameAssembler, float_to_pcm16
from appliance.audio.loudness import LoudnessNormalizer
from appliance.audio.resampling import StreamResampler


class OutputChain:
    """Turns float32 mono chunks at ``in_rate`` into exact 1920-byte output frames.

    Call :meth:`push` per engine chunk and :meth:`flush` once at the end of an
    utterance; ``flush`` emits the resampler tail and a final zero-padded frame.
    After ``flush`` the chain is ready for the next utterance and keeps the
    established loudness gain (same voice, same level). :meth:`reset` drops all
    pending audio and state instead (e.g. on barge-in). Not thread-safe.
    """

    def __init__(
        self,
        in_rate: int,
        *,
        normalize: bool = True,
        target_lufs: float = -16.0,
        ceiling_dbfs: float = -1.0,
    ) -> None:
        self._normalizer = (
            LoudnessNormalizer(in_rate, target_lufs=target_lufs, ceiling_dbfs=ceiling_dbfs)
            if normalize
            else None
        )
        self._resampler = StreamResampler(in_rate, OUTPUT_RATE)
        self._framer = FrameAssembler()
        self.in_rate = self._resampler.in_rate
        # Running totals over the chain's lifetime (not reset by flush or reset):
        # real 48 kHz samples produced (padding excluded), and frames returned.
        self.samples_out = 0
        self.frames_out = 0

    @property
    def pending_samples(self) -> int:
        """48 kHz samples waiting for a full frame (not counting the resampler delay)."""
        return self._framer.pending_samples

    def push(self, x: np.ndarray, continues: bool = False) -> list[bytes]:
        """Process one chunk of engine audio; return the frames completed by it. ``continues``:
        the chunk goes on with the sentence of the chunk before (see LoudnessNormalizer)."""
        x = finite_or_zero(as_mono_float32(x))
        if x.size == 0:
            return []
        if self._normalizer is not None:
            x = self._normalizer.process(x, continues)
        return self._frame(self._resampler.process(x))

    def flush(self) -> list[bytes]:
        """End the utterance: drain the resampler and pad the last partial frame."""
        frames = self._frame(self._resampler.flush())
        tail = self._framer.flush()
        self.frames_out += len(tail)
        return frames + tail

    def reset(self) -> None:
        """Discard pending audio and all normaliser/resampler state without output."""
        self._resampler.reset()
        self._framer.reset()
        if self._normalizer is not None:
            self._normalizer.reset()

    def _frame(self, y: np.ndarray) -> list[bytes]:
        if y.size == 0:
            return []
        pcm = float_to_pcm16(y)
        self.samples_out += pcm.size
        frames = self._framer.push(pcm)
        self.frames_out += len(frames)
        return frames
