"""Stage 3, denoise: the diffusion loop, from seeded noise to latents."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from imggen.components import Components
from imggen.errors import InvalidInput
from imggen.stages.encode import PromptEmbeddings

ProgressCallback = Callable[[int, int], None]
"""Called as ``(step, total)`` after each step; raising StageAborted stops the loop."""


def check_inputs(
    parts: Components,
    seeds: Sequence[int],
    steps: int,
    height: int,
    width: int,
    strength: float = 1.0,
) -> None:
    if not 0.0 < strength <= 1.0:
        raise InvalidInput(f"strength: must be in (0, 1] (got {strength})")
    if not seeds:
        raise InvalidInput("seeds: at least one seed is needed")
    if steps < 1:
        raise InvalidInput(f"steps: must be at least 1 (got {steps})")
    factor = parts.vae_scale_factor
    for name, side in (("height", height), ("width", width)):
        if side <= 0 or side % factor:
            raise InvalidInput(f"{name}: must be a positive multiple of {factor} (got {side})")


def initial_noise(parts: Components, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """One noise sample per seed, each from its own CPU generator.

    Drawing on the CPU makes a seed give the same image on any device, and one generator per
    sample makes an image independent of which other jobs share its batch.
    """
    shape = (
        1,
        parts.latent_channels,
        height // parts.vae_scale_factor,
        width // parts.vae_scale_factor,
    )
    samples = [
        torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
        for seed in seeds
    ]
    return torch.cat(samples).to(parts.device, parts.dtype)


@torch.inference_mode()
def denoise(
    parts: Components,
    embeddings: PromptEmbeddings,
    *,
    seeds: Sequence[int],
    steps: int,
    height: int,
    width: int,
    guidance: float = 7.5,
    image_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    on_step: ProgressCallback | None = None,
) -> torch.Tensor:
    """Run ``steps`` denoising steps for one image per seed; returns ``[len(seeds), C, h, w]``.

    With ``image_latents`` (image-to-image) the loop starts from them, noised to ``strength``
    (1.0 ignores the image; lower keeps more of it) and runs the last ``strength * steps`` steps.
    Raises InvalidInput for bad arguments and StageAborted when ``on_step`` asks to stop.
    """
    # 1. Check inputs and set up a scheduler for this run.
    check_inputs(parts, seeds, steps, height, width, strength)
    scheduler = parts.fresh_scheduler()
    scheduler.set_timesteps(steps, device=parts.device)
    timesteps = scheduler.timesteps

    # 2. Prepare latents and the text conditioning for each image.
    noise = initial_noise(parts, seeds, height, width)
    batch = len(seeds)
    if image_latents is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        # As diffusers' img2img: skip the first (1 - strength) of the schedule, noise the
        # image to the first remaining timestep.
        skip = steps - min(max(int(steps * strength), 1), steps)
        timesteps = timesteps[skip * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skip * scheduler.order)
        start = image_latents.to(parts.device, parts.dtype).expand(batch, -1, -1, -1)
        latents = scheduler.add_noise(start, noise, timesteps[:1].repeat(batch))
    use_guidance = guidance > 1.0
    context = embeddings.cond.expand(batch, -1, -1)
    if use_guidance:
        # Classifier-free guidance: unconditional and conditional halves in one UNet call.
        context = torch.cat([embeddings.uncond.expand(batch, -1, -1), context])
    context = context.to(parts.device, parts.dtype)

    # 3. The loop.
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if use_guidance else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise = parts.unet(model_input, t, encoder_hidden_states=context).sample
        if use_guidance:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return latents
