"""Stage 3, denoise: the diffusion loop, from seeded noise to latents."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from imggen.components import Components
from imggen.errors import InvalidInput
from imggen.samplers import resumes_exactly, rows_are_independent, step_noise
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


@dataclass
class DenoiseItem:
    """One image to draw: its conditioning, its seed, and (image-to-image) its start image."""

    embeddings: PromptEmbeddings
    seed: int
    image_latents: torch.Tensor | None = None  # [1, C, h, w]


@dataclass
class DenoiseResult:
    latents: torch.Tensor  # [len(items), C, h, w]
    kept: dict[int, torch.Tensor] = field(default_factory=dict)  # steps done -> latents then
    unet_steps: int = 0  # denoising steps run, per image
    # Steps done when the run yielded (``should_yield``): ``latents`` are those of that step,
    # to be resumed from (``resume``, ``resume_step``). None: the run finished.
    yielded_at: int | None = None


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
    sampler: str | None = None,
    on_step: ProgressCallback | None = None,
) -> torch.Tensor:
    """Run ``steps`` denoising steps for one image per seed; returns ``[len(seeds), C, h, w]``.

    With ``image_latents`` (image-to-image) the loop starts from them, noised to ``strength``
    (1.0 ignores the image; lower keeps more of it) and runs the last ``strength * steps`` steps.
    ``sampler`` names one of imggen.samplers.SAMPLERS (default: the model's own scheduler).
    Raises InvalidInput for bad arguments and StageAborted when ``on_step`` asks to stop.
    """
    items = [DenoiseItem(embeddings, seed, image_latents) for seed in seeds]
    return denoise_batch(
        parts,
        items,
        steps=steps,
        height=height,
        width=width,
        guidance=guidance,
        strength=strength,
        sampler=sampler,
        on_step=on_step,
    ).latents


@torch.inference_mode()
def denoise_batch(
    parts: Components,
    items: Sequence[DenoiseItem],
    *,
    steps: int,
    height: int,
    width: int,
    guidance: float = 7.5,
    strength: float = 1.0,
    sampler: str | None = None,
    resume: torch.Tensor | None = None,
    resume_step: int = 0,
    keep_steps: Sequence[int] = (),
    on_step: ProgressCallback | None = None,
    dropped: Callable[[], Collection[int]] | None = None,
    should_yield: Callable[[], bool] | None = None,
) -> DenoiseResult:
    """Denoise several images, each with its own prompt and generator, as one batch.

    An image comes out the same whichever batch it is in (up to float rounding). With ``resume``
    (latents after ``resume_step`` steps, e.g. from the semantic cache) the first
    ``resume_step`` steps are skipped. ``keep_steps`` lists step counts after which a copy of
    the latents is kept (to fill that cache). ``sampler``: as in ``denoise``. ``dropped``,
    asked before each step, names items whose share of the work has ended (their job was
    canceled): their rows leave the batch, where the sampler keeps no per-row state between
    steps, and their latents come back as zeros. ``should_yield``, asked before each step once
    a step is done, stops the run early where the sampler keeps no state between steps and draws
    no noise (DDIM, Euler): resumed from the latents it returns, the images come out the same.
    Raises InvalidInput, or StageAborted from ``on_step``.
    """
    # 1. Check inputs and set up a scheduler for this run.
    seeds = [item.seed for item in items]
    check_inputs(parts, seeds, steps, height, width, strength)
    if sampler is not None and sampler not in parts.family.samplers:
        runs = ", ".join(parts.family.samplers) or "only its own scheduler"
        raise InvalidInput(f"scheduler: {sampler!r} is not a sampler this model runs ({runs})")
    scheduler = parts.fresh_scheduler(sampler)
    factor = parts.vae_scale_factor
    parts.family.set_timesteps(parts, scheduler, steps, (height // factor) * (width // factor))
    timesteps = scheduler.timesteps
    batch = len(items)

    # 2. Prepare latents and the text conditioning for each image.
    noise = initial_noise(parts, seeds, height, width)
    skip = 0
    if items[0].image_latents is None:
        latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching: none
    else:
        # As diffusers' img2img: skip the first (1 - strength) of the schedule, noise the
        # image to the first remaining timestep.
        skip = steps - min(max(int(steps * strength), 1), steps)
        timesteps = timesteps[skip * scheduler.order :]
        start = torch.cat([_image_latents(parts, item) for item in items])
        first = timesteps[:1].repeat(batch)
        if hasattr(scheduler, "scale_noise"):  # flow matching: noise and image mixed by sigma
            latents = scheduler.scale_noise(start, first, noise)
        else:
            latents = scheduler.add_noise(start, noise, first)
    if resume is not None:
        if not 0 < resume_step < len(timesteps):
            raise InvalidInput(
                f"resume_step: must be in 1..{len(timesteps) - 1} (got {resume_step})"
            )
        latents = resume.to(parts.device, parts.dtype)
        timesteps = timesteps[resume_step * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index((skip + resume_step) * scheduler.order)
    use_guidance = guidance > 1.0
    context = torch.cat([item.embeddings.cond for item in items])
    if use_guidance:
        # Classifier-free guidance: unconditional and conditional halves in one denoiser call.
        context = torch.cat([torch.cat([item.embeddings.uncond for item in items]), context])
    context = context.to(parts.device, parts.dtype)
    # What else the family conditions the denoiser on (SDXL: pooled text and size; SD3: pooled
    # projections), row for row.
    added = parts.family.added_conditioning(
        parts, [item.embeddings for item in items], height, width, use_guidance
    )

    # 3. The loop. A stochastic sampler draws each image's step noise from its own generator.
    noise_kwargs = step_noise(scheduler, seeds)
    kept: dict[int, torch.Tensor] = {}
    total = resume_step + len(timesteps)
    rows = list(range(batch))  # the item of each row still in the batch
    can_drop = dropped is not None and rows_are_independent(scheduler)
    can_yield = should_yield is not None and resumes_exactly(scheduler)
    for i, t in enumerate(timesteps):
        # Only once this run has done a step: a resumed run always gets on.
        if can_yield and i > 0 and should_yield():  # type: ignore[misc]
            return DenoiseResult(
                latents=_all_rows(latents, rows, batch),
                kept=kept,
                unet_steps=i,
                yielded_at=resume_step + i,
            )
        gone = set(dropped()) & set(rows) if can_drop and dropped is not None else set()
        if gone and len(gone) < len(rows):
            keep = [row for row, item in enumerate(rows) if item not in gone]
            rows = [rows[row] for row in keep]
            latents, context = latents[keep], _keep_rows(context, keep, use_guidance)
            added = {
                name: _keep_rows(rows_of, keep, use_guidance) for name, rows_of in added.items()
            }
            if "generator" in noise_kwargs:
                noise_kwargs["generator"] = [noise_kwargs["generator"][row] for row in keep]
        model_input = torch.cat([latents] * 2) if use_guidance else latents
        if hasattr(scheduler, "scale_model_input"):
            model_input = scheduler.scale_model_input(model_input, t)
        predicted = parts.family.predict(parts, model_input, t, context, added)
        if use_guidance:
            uncond, cond = predicted.chunk(2)
            predicted = uncond + guidance * (cond - uncond)
        latents = scheduler.step(predicted, t, latents, **noise_kwargs).prev_sample
        done = resume_step + i + 1
        if done in keep_steps:
            kept[done] = _all_rows(latents, rows, batch).clone()
        if on_step is not None:
            on_step(done, total)
    return DenoiseResult(
        latents=_all_rows(latents, rows, batch), kept=kept, unet_steps=len(timesteps)
    )


def _keep_rows(context: torch.Tensor, keep: list[int], guided: bool) -> torch.Tensor:
    if not guided:
        return context[keep]
    uncond, cond = context.chunk(2)  # unconditional rows first, as the loop lays them out
    return torch.cat([uncond[keep], cond[keep]])


def _all_rows(latents: torch.Tensor, rows: list[int], batch: int) -> torch.Tensor:
    """``latents`` of the rows still in the batch, in a tensor of every item (zeros for those
    that left)."""
    if len(rows) == batch:
        return latents
    full = latents.new_zeros((batch, *latents.shape[1:]))
    full[rows] = latents
    return full


def _image_latents(parts: Components, item: DenoiseItem) -> torch.Tensor:
    if item.image_latents is None:
        raise InvalidInput("image_latents: a batch mixes image-to-image and text-to-image items")
    return item.image_latents.to(parts.device, parts.dtype)
