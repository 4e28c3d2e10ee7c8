"""A tiny Sesame CSM with random weights, saved the way the published checkpoint is laid out
(``save_pretrained`` of the model and its processor: config.json, model.safetensors, the
tokenizer and processor files), so the adapter loads it through the path real weights take.

Same architecture, small widths: a 2-layer backbone, a 2-layer depth decoder, 8 codebooks, and a
Mimi codec with 64-entry books and the real upsampling (24 kHz, 12.5 frames a second). The text
tokenizer is byte-level with CSM's special tokens (the real one is Llama 3's)."""

from __future__ import annotations

from pathlib import Path

CODEBOOKS = 8
BOOK = 64
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    bos, eos = 256, 257
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A {SPECIALS[1]}", special_tokens=[(SPECIALS[0], bos), (SPECIALS[1], eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIALS[0],
        eos_token=SPECIALS[1],
        pad_token=SPECIALS[2],
        extra_special_tokens={"audio_token": SPECIALS[2], "audio_eos_token": SPECIALS[3]},
    )


def build_tiny_csm(directory: Path, seed: int = 0, max_positions: int = 512) -> Path:
    import torch
    from transformers import (
        CsmConfig,
        CsmForConditionalGeneration,
        CsmProcessor,
        EncodecFeatureExtractor,
        MimiConfig,
    )

    torch.manual_seed(seed)
    codec = MimiConfig(
        hidden_size=32,
        num_filters=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=64,
        codebook_dim=32,
        vector_quantization_hidden_dimension=32,
        codebook_size=BOOK,
        num_quantizers=CODEBOOKS,
        upsample_groups=32,
        upsampling_ratios=[8, 6, 5, 4],
    )
    audio_vocab = BOOK + 3  # the book, then padding and end markers as in the real 2048 + 3
    config = CsmConfig(
        text_vocab_size=len(SPECIALS) + 256,
        vocab_size=audio_vocab,
        num_codebooks=CODEBOOKS,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=256,
        pad_token_id=258,
        audio_token_id=258,
        audio_eos_token_id=259,
        codebook_pad_token_id=audio_vocab - 1,
        codebook_eos_token_id=0,
        depth_decoder_config={
            "num_codebooks": CODEBOOKS,
            "backbone_hidden_size": 64,
            "vocab_size": audio_vocab,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": CODEBOOKS + 1,
        },
        codec_config=codec.to_dict(),
    )
    model = CsmForConditionalGeneration(config).eval()
    # Mimi's codebooks are buffers that start at zero (a checkpoint fills them): random entries,
    # so that the audio depends on the codes as it does with real weights.
    for module in model.codec_model.modules():
        if hasattr(module, "embed_sum") and hasattr(module, "cluster_usage"):
            module.embed_sum.normal_()
            module._embed = None
    processor = CsmProcessor(
        feature_extractor=EncodecFeatureExtractor(sampling_rate=24000), tokenizer=_tokenizer()
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_lora(checkpoint: Path, directory: Path, seed: int) -> Path:
    """A LoRA voice for the tiny CSM as peft saves one (adapter_config.json and its weights), with
    random non-zero weights so that it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(seed)
    model = CsmForConditionalGeneration.from_pretrained(checkpoint)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(directory)
    return directory
