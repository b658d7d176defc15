"""Tiny models with random weights, built locally: diffusion, expander, captioner, CLIP.

The diffusion models, Stable Diffusion, SDXL and SD3 shaped, have every part a real one has
(tokenizers and text encoders, UNet or transformer, VAE, scheduler) and are saved as ordinary
diffusers folders in safetensors, so they load through the same path as real models. The others
have the shapes of a GPT-2 prompt expander, a ViT/GPT-2 captioner and CLIP. They draw and
write noise: they exist to exercise the machinery, not to make art.
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
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    T5Config,
    T5EncoderModel,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
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


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
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
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
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
