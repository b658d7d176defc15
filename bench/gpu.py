"""The CUDA path: a Stable-Diffusion-1.5-sized or SDXL-sized model with random weights, plain
diffusers pipeline vs imggen's worker path (encode, batched denoise, decode), fp16 and bf16,
batch 1/4/8.

    python -m bench.gpu                                  # on a CUDA machine; installs nothing
    python -m bench.gpu --model sdxl --batches 1,4       # SDXL's UNet at 1024x1024
    python -m bench.gpu --device cpu --tiny --steps 2    # smoke test anywhere (--model sdxl too)

Both paths load the same safetensors folder and draw with the same CPU-seeded generators, so
their images are compared as well as timed (max abs pixel difference, 0-255).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

import imggen
from imggen.stages.denoise import DenoiseItem, denoise_batch
from imggen.tiny import make_tiny_pipeline, make_tiny_sdxl_pipeline

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def sd15_sized(seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.5's shapes (860 M-parameter UNet, 12-layer CLIP text encoder, 84 M VAE), random."""
    tiny = make_tiny_pipeline(seed)  # for its tokenizer and scheduler
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8,
    )
    vae = _sd_vae(512)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tiny.tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            bos_token_id=tiny.tokenizer.bos_token_id,
            eos_token_id=tiny.tokenizer.eos_token_id,
            pad_token_id=tiny.tokenizer.pad_token_id,
        )
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny.tokenizer,
        unet=unet,
        scheduler=tiny.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl_sized(seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL base's shapes (2.6 B-parameter UNet with text_time conditioning, CLIP ViT-L and
    OpenCLIP bigG text encoders, the same VAE), random weights."""
    tiny = make_tiny_sdxl_pipeline(seed)  # for its tokenizers and scheduler
    tokenizer = tiny.tokenizer

    def clip(hidden: int, layers: int, heads: int, projection: int | None) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_attention_heads=heads,
            num_hidden_layers=layers,
            max_position_embeddings=77,
            projection_dim=projection or hidden,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=6 * 256 + 1280,
    )
    return StableDiffusionXLPipeline(
        vae=_sd_vae(1024),
        text_encoder=CLIPTextModel(clip(768, 12, 12, None)),
        text_encoder_2=CLIPTextModelWithProjection(clip(1280, 32, 20, 1280)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=tiny.scheduler,
        add_watermarker=False,
    )


def _sd_vae(sample_size: int) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_pipeline(pipe: DiffusionPipeline, seeds: list[int], steps: int, size: int) -> np.ndarray:
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    out = pipe(
        [PROMPT] * len(seeds),
        num_inference_steps=steps,
        height=size,
        width=size,
        generator=generators,
        output_type="np",
        guidance_scale=7.5,
    )
    return np.round(out.images * 255)


def run_imggen(parts: imggen.Components, seeds: list[int], steps: int, size: int) -> np.ndarray:
    embeddings = imggen.encode_prompt(parts, PROMPT)
    items = [DenoiseItem(embeddings, s) for s in seeds]
    latents = denoise_batch(parts, items, steps=steps, height=size, width=size).latents
    return np.stack(
        [np.asarray(image, dtype=np.float64) for image in imggen.decode(parts, latents)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--tiny", action="store_true", help="the tiny model of that family")
    parser.add_argument("--size", type=int, help="default: 512 (sd15), 1024 (sdxl), 64 (--tiny)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--dtypes", default="fp16,bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.size or (64 if args.tiny else {"sd15": 512, "sdxl": 1024}[args.model])
    build = {
        ("sd15", True): make_tiny_pipeline,
        ("sd15", False): sd15_sized,
        ("sdxl", True): make_tiny_sdxl_pipeline,
        ("sdxl", False): sdxl_sized,
    }[(args.model, args.tiny)]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        made = build()
        made.save_pretrained(folder, safe_serialization=True)
        pipeline_class = type(made)
        del made
        for dtype_name in args.dtypes.split(","):
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
                dtype_name
            ]
            pipe = pipeline_class.from_pretrained(
                folder, torch_dtype=dtype, use_safetensors=True
            ).to(device)
            pipe.set_progress_bar_config(disable=True)
            parts = imggen.load_components(folder, device, dtype)
            for batch in batches:
                seeds = list(range(batch))

                timings = {}
                images = {}
                paths = {
                    "diffusers pipeline": lambda: run_pipeline(pipe, seeds, args.steps, size),  # noqa: B023
                    "imggen worker path": lambda: run_imggen(parts, seeds, args.steps, size),  # noqa: B023
                }
                for name, run in paths.items():
                    run()  # warm-up: kernels, allocator
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    sync(device)
                    started = time.perf_counter()
                    images[name] = run()
                    sync(device)
                    elapsed = time.perf_counter() - started
                    peak = (
                        torch.cuda.max_memory_allocated() / 2**30
                        if device.type == "cuda"
                        else float("nan")
                    )
                    timings[name] = (elapsed, peak)
                diff = float(
                    np.abs(images["diffusers pipeline"] - images["imggen worker path"]).max()
                )
                for name, (elapsed, peak) in timings.items():
                    rows.append((dtype_name, batch, name, elapsed, batch / elapsed, peak, diff))
            if device.type == "cuda":
                torch.cuda.empty_cache()

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model = {
        ("sd15", True): "tiny SD model",
        ("sd15", False): "SD-1.5-sized UNet, random weights",
        ("sdxl", True): "tiny SDXL model",
        ("sdxl", False): "SDXL-sized UNet (2.6 B), random weights",
    }[(args.model, args.tiny)]
    print(
        f"\n{model}, {size}x{size}, {args.steps} steps, CFG 7.5, {gpu}, torch {torch.__version__}\n"
    )
    print("| dtype | batch | path | seconds | images/s | peak GiB | max pixel diff between paths |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for dtype_name, batch, name, elapsed, rate, peak, diff in rows:
        print(
            f"| {dtype_name} | {batch} | {name} | {elapsed:.2f} | {rate:.2f} | {peak:.2f} | {diff:.0f} |"
        )


if __name__ == "__main__":
    main()
