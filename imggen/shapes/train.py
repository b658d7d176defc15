"""Train the shapes model from scenes rendered on the fly, and save it as a diffusers folder.

Two phases: the VAE learns to reconstruct rendered scenes (64x64 pixels <-> 16x16x4 latents);
then, on a fixed set of encoded scenes, the UNet and the text encoder learn together to denoise
(v-prediction, Stable Diffusion's noise schedule). One caption in ten is dropped to the empty
prompt so that classifier-free guidance works, and the saved UNet is an exponential moving
average of the trained one, which samples cleaner than the last step's weights.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from imggen.shapes import mark_as_shapes, model
from imggen.shapes.world import Scene, all_scenes, caption, render

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    threads: int = 2
    vae_steps: int = 800
    vae_batch: int = 32
    vae_lr: float = 1e-3
    scenes: int = 60_000  # encoded once, then sampled for the UNet
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    drop_caption: float = 0.1
    checkpoint_every: int = 500
    resume: str | None = None  # a saved shapes model: keep its VAE, train its UNet further


def render_batch(rng: random.Random, count: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` random scenes as a tensor in [-1, 1] (N, 3, size, size) and their captions."""
    scenes = all_scenes()
    chosen: list[Scene] = [rng.choice(scenes) for _ in range(count)]
    pixels = np.stack([np.asarray(render(scene, size, rng)) for scene in chosen])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, [caption(scene) for scene in chosen]


def train_vae(vae: AutoencoderKL, config: TrainConfig, log: Log) -> None:
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    vae.train()
    for step in range(1, config.vae_steps + 1):
        images, _ = render_batch(rng, config.vae_batch, model.IMAGE_SIZE)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        # The KL term only keeps latents near unit scale; reconstruction is what matters.
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = torch.nn.functional.mse_loss(recon, images) + 1e-3 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.vae_steps:
            log(f"vae step {step}/{config.vae_steps} loss {loss.item():.5f}")
    vae.eval()


@torch.no_grad()
def encode_scenes(
    vae: AutoencoderKL, tokenizer: model.CLIPTokenizer, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latent means and stds of ``config.scenes`` rendered scenes, and their token ids."""
    rng = random.Random(config.seed + 1)
    means, stds, captions = [], [], []
    for start in range(0, config.scenes, 256):
        images, batch_captions = render_batch(
            rng, min(256, config.scenes - start), model.IMAGE_SIZE
        )
        posterior = vae.encode(images).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
        captions += batch_captions
    ids = tokenizer(
        captions, padding="max_length", max_length=model.MAX_TOKENS, return_tensors="pt"
    ).input_ids
    return torch.cat(means), torch.cat(stds), ids


def _learning_rate(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.unet_lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.unet_steps - config.warmup_steps)
    return config.unet_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_denoiser(
    parts: StableDiffusionPipeline,
    config: TrainConfig,
    log: Log,
    checkpoint: Callable[[StableDiffusionPipeline], None],
) -> None:
    """Train ``parts.unet`` and ``parts.text_encoder`` together; ``checkpoint`` gets a pipeline
    holding the averaged weights every ``config.checkpoint_every`` steps and at the end."""
    means, stds, ids = encode_scenes(parts.vae, parts.tokenizer, config)
    if config.resume is None:
        parts.vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    # A resumed model keeps its scale: its UNet learnt latents of that size.
    scale = float(parts.vae.config.scaling_factor)
    log(f"encoded {len(ids)} scenes; latent scaling factor {scale:.4f}")
    empty = parts.tokenizer(
        "", padding="max_length", max_length=model.MAX_TOKENS, return_tensors="pt"
    ).input_ids[0]
    scheduler = parts.scheduler
    trained = [*parts.unet.parameters(), *parts.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=config.unet_lr, weight_decay=0.01)
    averaged = copy.deepcopy(parts)
    generator = torch.Generator().manual_seed(config.seed + 2)
    parts.unet.train()
    parts.text_encoder.train()
    started = time.monotonic()
    for step in range(config.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        index = torch.randint(len(ids), (config.unet_batch,), generator=generator)
        mean = means[index]
        latents = (mean + stds[index] * torch.randn(mean.shape, generator=generator)) * scale
        tokens = ids[index].clone()
        dropped = torch.rand(len(tokens), generator=generator) < config.drop_caption
        tokens[dropped] = empty
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            scheduler.config.num_train_timesteps, (len(tokens),), generator=generator
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps)
        context = parts.text_encoder(tokens)[0]
        prediction = parts.unet(noisy, timesteps, context).sample
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        _update_average(averaged, parts, config.ema_decay if step > config.warmup_steps else 0.0)
        done = step + 1
        if done % 50 == 0:
            rate = done / (time.monotonic() - started)
            log(f"unet step {done}/{config.unet_steps} loss {loss.item():.4f} ({rate:.2f} steps/s)")
        if done % config.checkpoint_every == 0 or done == config.unet_steps:
            checkpoint(averaged)


@torch.no_grad()
def _update_average(
    averaged: StableDiffusionPipeline, live: StableDiffusionPipeline, decay: float
) -> None:
    for name in ("unet", "text_encoder"):
        target = list(getattr(averaged, name).parameters())
        source = list(getattr(live, name).parameters())
        torch._foreach_lerp_(target, source, 1.0 - decay)


def train_shapes(out_dir: str | Path, config: TrainConfig, log: Log = print) -> Path:
    """Train the shapes model and save it to ``out_dir`` (overwritten at each checkpoint)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    target = Path(out_dir)
    if config.resume is None:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = model.word_tokenizer(Path(tmp))
        parts = StableDiffusionPipeline(
            vae=model.vae(),
            text_encoder=model.text_encoder(tokenizer),
            tokenizer=tokenizer,
            unet=model.unet(),
            scheduler=model.scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        parts = StableDiffusionPipeline.from_pretrained(
            config.resume, local_files_only=True, use_safetensors=True
        )
    log(f"training the shapes model: {asdict(config)}")
    started = time.monotonic()
    if config.resume is None:
        train_vae(parts.vae, config, log)

    def checkpoint(averaged: StableDiffusionPipeline) -> None:
        # The averaged copy was made after the VAE's training and scaling: it holds them.
        averaged.save_pretrained(target, safe_serialization=True)
        mark_as_shapes(target, model.IMAGE_SIZE)
        log(f"saved {target} after {time.monotonic() - started:.0f} s")

    train_denoiser(parts, config, log, checkpoint)
    return target
