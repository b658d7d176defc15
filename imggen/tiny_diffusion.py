"""Tiny diffusion models with random weights, built locally: Stable Diffusion, SDXL and SD3
shaped (``imggen.tiny`` makes LoRA adapters for them).

Each has every part a real one has (tokenizers and text encoders, UNet or transformer, VAE,
scheduler) and is saved as an ordinary diffusers folder in safetensors, so it loads through the
same path as a real model. They draw noise: they exist to exercise the machinery.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

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
    text_encoder = CLIPTextModel(_text_config(tokenizer))
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
    vae = _vae()
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


def _text_config(tokenizer: CLIPTokenizer, **extra: Any) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _vae(latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four levels: the same 8x downsampling as Stable Diffusion's VAE.
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
        **extra,
    )


def make_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A tiny SDXL-shaped model in memory, every part seeded: two text encoders (the second
    with a projection), a UNet with SDXL's text_time added conditioning, the same VAE."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=64,  # both encoders' hidden states side by side
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size numbers, pooled text
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 3)
    vae = _vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def make_t5_tokenizer() -> Any:
    """A T5 tokenizer (sentencepiece-style unigram) over single characters, built here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-()"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(c, -2.0) for c in chars if c != " "]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    # The class SD3 folders name (transformers 5 keeps it as an alias, made at import).
    return transformers.T5TokenizerFast(  # type: ignore[attr-defined]
        tokenizer_object=unigram,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )


def make_tiny_sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A tiny SD3-shaped model in memory, every part seeded: two CLIP encoders with projections,
    a T5 encoder, an MMDiT transformer, a 16-channel VAE with SD3's shift, flow matching."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    t5_tokenizer = make_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    torch.manual_seed(seed + 2)
    text_encoder_3 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=64,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
        )
    )
    torch.manual_seed(seed + 3)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,  # T5's width; the CLIP states (32 + 32) fill it
        caption_projection_dim=32,
        pooled_projection_dim=64,  # both CLIP projections
        pos_embed_max_size=16,
    )
    torch.manual_seed(seed + 4)
    vae = _vae(
        16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )


def make_tiny_sd3(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny SD3-shaped model to ``directory`` as a diffusers folder (safetensors)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    make_tiny_sd3_pipeline(seed).save_pretrained(target, safe_serialization=True)
    return target


def make_tiny(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model to ``directory`` as a diffusers folder (safetensors) and return it."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    make_tiny_pipeline(seed).save_pretrained(target, safe_serialization=True)
    return target


def make_tiny_sdxl(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny SDXL-shaped model to ``directory`` as a diffusers folder (safetensors)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    make_tiny_sdxl_pipeline(seed).save_pretrained(target, safe_serialization=True)
    return target
