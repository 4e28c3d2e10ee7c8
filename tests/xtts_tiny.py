"""A tiny XTTS v2 with random weights, saved as the published checkpoint is laid out
(``config.json``, ``model.pth`` holding ``{"model": state_dict}``, ``vocab.json``), so the adapter
loads it through ``Xtts.load_checkpoint`` as it does real weights.

Same architecture, small widths: a 2-layer GPT of 64 channels with the perceiver resampler,
258 audio tokens, at most 48 of them an utterance (2.2 s), and XTTS's own HiFi-GAN decoder and
speaker encoder (their sizes are fixed by coqui-tts). The tokenizer knows single characters and
XTTS's special tokens."""

from __future__ import annotations

import string
from pathlib import Path

MAX_AUDIO_TOKENS = 48
SPECIALS = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]", "[ja]"]


def build_tiny_xtts(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts, XttsArgs

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-:;\"")
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "vocab.json"))
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=64,
        gpt_n_heads=4,
        gpt_num_audio_tokens=258,
        gpt_start_audio_token=256,
        gpt_stop_audio_token=257,
        gpt_max_audio_tokens=MAX_AUDIO_TOKENS,
        gpt_max_text_tokens=120,
        gpt_use_perceiver_resampler=True,
        decoder_input_dim=64,
    )
    config = XttsConfig(model_args=args, languages=["en"])
    config.save_json(str(directory / "config.json"))
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(str(directory / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, directory / "model.pth")
    return directory
