"""The CUDA path: a Stable-Diffusion-1.5-sized model with random weights, plain diffusers
pipeline vs imggen's worker path (encode, batched denoise, decode), fp16 and bf16, batch 1/4/8.

    python -m bench.gpu                                  # on a CUDA machine; installs nothing
    python -m bench.gpu --device cpu --tiny --steps 2    # smoke test anywhere

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
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

import imggen
from imggen.stages.denoise import DenoiseItem, denoise_batch
from imggen.tiny import make_tiny_pipeline

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
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_pipeline(
    pipe: StableDiffusionPipeline, seeds: list[int], steps: int, size: int
) -> np.ndarray:
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
    parser.add_argument("--tiny", action="store_true", help="the tiny model instead of SD 1.5 size")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--dtypes", default="fp16,bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    size = 64 if args.tiny and args.size == 512 else args.size
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        (make_tiny_pipeline() if args.tiny else sd15_sized()).save_pretrained(
            folder, safe_serialization=True
        )
        for dtype_name in args.dtypes.split(","):
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
                dtype_name
            ]
            pipe = StableDiffusionPipeline.from_pretrained(
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
    model = "tiny model" if args.tiny else "SD-1.5-sized UNet, random weights"
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
