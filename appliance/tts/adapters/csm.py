"""Sesame CSM (Conversational Speech Model) through ``transformers``: a Llama backbone writes one
Mimi frame (12.5 Hz, one code per codebook) per step, a small depth decoder fills the frame's
other codebooks, and the Mimi codec turns frames into 24 kHz audio.

Streaming: ``generate`` runs on a thread of its own and hands each frame over as it is made (a
``transformers`` streamer); the adapter decodes the frames in small groups as they arrive (2
frames, 160 ms, first; then doubling to 12). Mimi's decoder is causal, so a group decoded with
``CONTEXT_FRAMES`` of the frames before it in front gives the same samples as decoding the
whole utterance at once (``tests/unit/test_csm_windows.py`` holds it to that). The frame queue is
short: a paused session stops taking audio, the queue fills and generation waits with it; closing
the stream (STOP, a cancelled session) ends generation at its next frame (the streamer raises
into ``generate``, which takes no stopping criteria of ours).

The model directory is what ``save_pretrained`` writes for the model and its processor (the
layout of the published checkpoint). The text goes in as ``[speaker]text``, CSM's own prompt.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Iterator

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter

log = logging.getLogger(__name__)

FIRST_GROUP = 2  # frames decoded before the first audio (160 ms)
MAX_GROUP = 12  # later groups double up to this (~1 s)
CONTEXT_FRAMES = 4  # frames decoded again in front of a group (the causal decoder's reach)
QUEUE_FRAMES = 25  # frames generation may run ahead of the audio taken (2 s)
SECONDS_PER_CHAR = 0.09  # the longest speech a text is allowed, plus MIN_AUDIO_S
MIN_AUDIO_S = 2.0
_END = object()


class TextTooLong(ValueError):
    pass


class CsmAdapter(EngineAdapter):
    engine = "csm"
    capabilities = ENGINE_CAPABILITIES["csm"]
    streams_within_segment = True
    speaker = 0
    max_audio_s = 30.0
    temperature = 0.9

    def load(self) -> None:
        import torch
        import transformers
        from transformers import AutoProcessor, CsmForConditionalGeneration

        transformers.utils.logging.set_verbosity_error()  # its notices are not the worker's log lines
        transformers.utils.logging.disable_progress_bar()
        directory = self.spec.locate(self.models_dir)["dir"]
        cuda = self.device in ("auto", "cuda", "tensorrt") and torch.cuda.is_available()
        if self.device in ("cuda", "tensorrt") and not cuda:
            log.info("%s: no CUDA device, CSM runs on the CPU", self.spec.model_id)
        self.actual_device = "cuda" if cuda else "cpu"
        dtype = torch.bfloat16 if cuda else torch.float32
        self._processor = AutoProcessor.from_pretrained(directory)
        self._model = CsmForConditionalGeneration.from_pretrained(directory, dtype=dtype).to(
            self.actual_device
        )
        self._model.eval()
        codec = self._model.config.codec_config
        if codec.sampling_rate != self.spec.sample_rate:
            raise ValueError(
                f"{self.spec.model_id}: its codec makes {codec.sampling_rate} Hz, catalog says {self.spec.sample_rate}"
            )
        self._frame_rate = codec.frame_rate or 12.5
        self._samples_per_frame = round(codec.sampling_rate / self._frame_rate)
        self._codebook_size = codec.codebook_size
        self._eos = self._model.config.codebook_eos_token_id
        self._context_tokens = self._model.config.max_position_embeddings
        self.loaded = True
        log.info("loaded %s (CSM) from %s on %s", self.spec.model_id, directory, self.actual_device)

    def unload(self) -> None:
        self._model = None
        self._processor = None
        self.loaded = False

    def max_frames(self, text: str) -> int:
        seconds = min(self.max_audio_s, MIN_AUDIO_S + SECONDS_PER_CHAR * len(text))
        return max(1, math.ceil(seconds * self._frame_rate))

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        text = text.strip()
        if not text:
            return
        inputs = self._processor(f"[{self.speaker}]{text}", add_special_tokens=True).to(self.actual_device)
        frames_allowed = self.max_frames(text)
        prompt = int(inputs["input_ids"].shape[-1])
        if prompt + frames_allowed > self._context_tokens:
            raise TextTooLong(
                f"text too long for {self.spec.model_id}: {prompt} tokens and up to {frames_allowed} frames "
                f"of audio exceed its context of {self._context_tokens}"
            )
        run = _Generation(self._model, inputs, frames_allowed, self.temperature)
        self.generation = run  # the latest one, for tests and logs: frames made so far
        try:
            yield from self._decode_as_made(run)
        finally:
            run.stop()

    def _decode_as_made(self, run: _Generation) -> Iterator[np.ndarray]:
        frames: list[np.ndarray] = []
        done, group = 0, FIRST_GROUP
        for frame in run.frames():
            if (frame == self._eos).all():  # the end of speech the model chose
                break
            frames.append(frame)
            if len(frames) - done >= group:
                yield self.decode(frames, done)
                done, group = len(frames), min(MAX_GROUP, group * 2)
        if len(frames) > done:
            yield self.decode(frames, done)

    def decode(self, frames: list[np.ndarray], start: int) -> np.ndarray:
        """The audio of ``frames[start:]``, decoded with up to CONTEXT_FRAMES before it in front."""
        import torch

        first = max(0, start - CONTEXT_FRAMES)
        # Codes outside the codec's book are the model's markers (padding, end), never audio.
        codes = np.clip(np.stack(frames[first:]), 0, self._codebook_size - 1)
        batch = torch.from_numpy(codes.T[None]).to(self.actual_device)
        with torch.inference_mode():
            audio = self._model.codec_model.decode(batch).audio_values[0, 0]
        samples = audio.float().cpu().numpy()[(start - first) * self._samples_per_frame :]
        return np.clip(samples[: (len(frames) - start) * self._samples_per_frame], -1.0, 1.0)


class _Stopped(Exception):
    """Raised into ``generate`` (from the streamer) to end it: it takes no stopping criteria of ours."""


class _Generation:
    """``generate`` on its own thread; its frames through a short queue, as they are made."""

    def __init__(self, model, inputs, max_frames: int, temperature: float) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.made = 0  # frames generated so far
        kwargs = dict(
            **inputs,
            max_new_tokens=max_frames,
            do_sample=True,
            temperature=temperature,
            depth_decoder_do_sample=True,
            depth_decoder_temperature=temperature,
            streamer=_FrameStreamer(self._frame),
        )
        self._thread = threading.Thread(
            target=self._run, args=(model, kwargs), name="csm-generate", daemon=True
        )
        self._thread.start()

    def _run(self, model, kwargs) -> None:
        import torch

        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 (handed to the reader, which raises it)
            self._error = exc
        finally:
            self._put(_END)

    def _frame(self, frame: np.ndarray) -> None:
        self.made += 1
        if not self._put(frame):
            raise _Stopped

    def _put(self, item) -> bool:
        """Queue ``item``, waiting for room while the reader is there; False once stopped."""
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise RuntimeError(f"CSM generation failed: {self._error}") from self._error
                return
            yield item

    def stop(self) -> None:
        """End generation at its next frame and wait for the thread (a frame's time at most)."""
        self._stopped.set()
        self._thread.join()


class _FrameStreamer:
    """What ``generate`` calls with each new frame (and first with the prompt, which is skipped)."""

    def __init__(self, put) -> None:
        self._put = put
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._put(value[0].cpu().numpy().astype(np.int64))

    def end(self) -> None:
        pass
