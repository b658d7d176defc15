"""Tiny models with random weights, built locally: the diffusion models (``tiny_diffusion``)
and LoRA adapters for them, a GPT-2-shaped prompt expander, a ViT/GPT-2 captioner and CLIP.
They draw and write noise: they exist to exercise the machinery, not to make art.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
)

from imggen.tiny_diffusion import (
    MAX_TOKENS,
    make_tiny,
    make_tiny_pipeline,
    make_tiny_sd3,
    make_tiny_sd3_pipeline,
    make_tiny_sdxl,
    make_tiny_sdxl_pipeline,
    make_tokenizer,
)

__all__ = [
    "TINY_KINDS",
    "make_tiny",
    "make_tiny_captioner",
    "make_tiny_clip",
    "make_tiny_expander",
    "make_tiny_lora",
    "make_tiny_pipeline",
    "make_tiny_sd3",
    "make_tiny_sd3_pipeline",
    "make_tiny_sdxl",
    "make_tiny_sdxl_pipeline",
    "make_tokenizer",
]


def make_tiny_lora(
    directory: str | Path,
    base: str | Path,
    name: str = "tiny-lora",
    seed: int = 0,
    text_encoders: bool = False,
) -> Path:
    """A LoRA with random weights for the model folder ``base`` (its denoiser's attention, and with
    ``text_encoders`` its text encoders' too), saved by diffusers as ``directory/name.safetensors``.
    Both halves of each low-rank pair are random (not the usual zero start), so it changes what
    the model draws."""
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(base, use_safetensors=True, local_files_only=True)
    torch.manual_seed(seed)
    layers: dict[str, Any] = {}
    targets = {
        "unet": ["to_q", "to_k", "to_v", "to_out.0"],
        "transformer": ["to_q", "to_k", "to_v", "to_out.0"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"],
        "text_encoder_2": ["q_proj", "k_proj", "v_proj", "out_proj"],
    }
    for part, modules in targets.items():
        model = getattr(pipe, part, None)
        if model is None or (part.startswith("text_encoder") and not text_encoders):
            continue
        config = LoraConfig(r=4, lora_alpha=4, target_modules=modules, init_lora_weights=False)
        model.add_adapter(config)
        layers[f"{part}_lora_layers"] = get_peft_model_state_dict(model)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        target, weight_name=f"{name}.safetensors", safe_serialization=True, **layers
    )
    return target / f"{name}.safetensors"


def make_byte_tokenizer(workdir: Path) -> GPT2Tokenizer:
    """A GPT-2 tokenizer whose vocabulary is the 256 byte stand-ins and an end-of-text token."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    (workdir / "vocab.json").write_text(json.dumps(vocab))
    (workdir / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(str(workdir / "vocab.json"), str(workdir / "merges.txt"))


def _gpt2_config(vocab_size: int, eos: int, **extra: Any) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
        **extra,
    )


def make_tiny_expander(directory: str | Path, seed: int = 0) -> Path:
    """A tiny GPT-2-shaped prompt expander with random weights (safetensors)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_byte_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(_gpt2_config(len(tokenizer), tokenizer.eos_token_id))
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def make_tiny_captioner(directory: str | Path, seed: int = 0) -> Path:
    """A tiny ViT-encoder / GPT-2-decoder captioner with random weights (safetensors)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_byte_tokenizer(Path(tmp))
    eos = tokenizer.eos_token_id
    encoder = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    decoder = _gpt2_config(len(tokenizer), eos, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = eos
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config)
    model.generation_config.decoder_start_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(target)
    return target


def make_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """A tiny CLIP model and processor with random weights (safetensors)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": MAX_TOKENS,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
    }
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(target, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    return target


TINY_KINDS = {
    "diffusion": make_tiny,
    "sdxl": make_tiny_sdxl,
    "sd3": make_tiny_sd3,
    "expander": make_tiny_expander,
    "captioner": make_tiny_captioner,
    "clip": make_tiny_clip,
}
