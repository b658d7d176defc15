"""Between the VAE's latents and the diffusion model's: the scaling factor the model was trained
with and, where the VAE names them, its latents' mean and spread (some SDXL VAEs) or shift
(SD3's)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def _mean_std(vae: AutoencoderKL, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    return torch.tensor(mean).view(shape).to(like), torch.tensor(std).view(shape).to(like)


def to_model(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """The VAE encoder's latents as the diffusion model reads them."""
    stats = _mean_std(vae, latents)
    if stats is not None:
        latents = (latents - stats[0]) / stats[1]
    shift = getattr(vae.config, "shift_factor", None)  # SD3's VAE
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


def to_vae(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """The diffusion model's latents as the VAE decoder reads them."""
    stats = _mean_std(vae, latents)
    if stats is not None:
        return latents * stats[1] / vae.config.scaling_factor + stats[0]
    shift = getattr(vae.config, "shift_factor", None)
    latents = latents / vae.config.scaling_factor
    return latents if shift is None else latents + shift
