"""A tiny Stable-Diffusion-shaped model with random weights, built locally.

It has every part a real model has (CLIP tokenizer and text encoder, UNet, VAE, scheduler) and is
saved as an ordinary diffusers folder in safetensors, so it loads through the same path as any
Stable Diffusion model. It draws noise: it exists to exercise the machinery, not to make art.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MAX_TOKENS = 77


def _byte_vocab() -> list[str]:
    # CLIP's BPE works on a printable stand-in for each byte; with every stand-in (alone and as
    # a word end) in the vocabulary and no merges, any text tokenizes to single characters.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    return ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]


def make_tokenizer(workdir: Path) -> CLIPTokenizer:
    """A CLIP tokenizer from a vocabulary written to ``workdir`` (no hub involved)."""
    vocab = _byte_vocab()
    vocab_file, merges_file = workdir / "vocab.json", workdir / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n")
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MAX_TOKENS)


def make_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny model in memory, every part seeded."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four levels: the same 8x downsampling as Stable Diffusion's VAE.
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_tiny(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model to ``directory`` as a diffusers folder (safetensors) and return it."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    make_tiny_pipeline(seed).save_pretrained(target, safe_serialization=True)
    return target
