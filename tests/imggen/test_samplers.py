"""Samplers per job: each named sampler runs over the model's own config, changes the image,
gives the same image alone or batched, and matches diffusers' own scheduler of that name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

import imggen
from imggen import InvalidInput, load_components
from imggen.samplers import SAMPLERS, build_scheduler, sampler_identity
from producer.spec import SCHEDULERS


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path) -> imggen.Components:
    return load_components(tiny_model_dir, device="cpu")


def _draw(parts: imggen.Components, seeds: list[int], sampler: str | None) -> torch.Tensor:
    embeddings = imggen.encode_prompt(parts, "a red fox")
    return imggen.denoise(
        parts, embeddings, seeds=seeds, steps=6, height=64, width=64, guidance=4.0, sampler=sampler
    )


def test_the_job_contract_and_the_library_name_the_same_samplers() -> None:
    assert set(SCHEDULERS) == set(SAMPLERS)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_each_sampler_is_batch_independent_and_keeps_the_model_config(
    parts: imggen.Components, sampler: str
) -> None:
    scheduler = build_scheduler(parts.scheduler, sampler)
    assert scheduler.config.prediction_type == parts.scheduler.config.prediction_type
    alone = _draw(parts, [11], sampler)
    batched = _draw(parts, [5, 11], sampler)
    assert torch.isfinite(batched).all()
    assert torch.allclose(batched[1:], alone, atol=1e-4)
    assert torch.equal(_draw(parts, [11], sampler), alone)


def test_samplers_change_the_image_and_their_cache_identity(parts: imggen.Components) -> None:
    default = _draw(parts, [3], None)
    assert torch.allclose(_draw(parts, [3], "ddim"), default)  # the tiny model's own is DDIM
    for sampler in ("euler", "euler_a", "dpmpp_2m", "unipc"):
        assert not torch.allclose(_draw(parts, [3], sampler), default, atol=1e-3), sampler
    identities = {sampler_identity(parts.scheduler, name) for name in SAMPLERS}
    assert len(identities) == len(SAMPLERS)
    assert sampler_identity(parts.scheduler, "ddim") == sampler_identity(parts.scheduler, None)


def test_euler_ancestral_draws_what_diffusers_draws_with_the_same_generators(
    parts: imggen.Components, tiny_model_dir: Path
) -> None:
    """The stochastic sampler, stepped by imggen's loop and by diffusers' pipeline from the same
    noise and step generators, ends at the same latents."""
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    seed = 9
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))
    step_generator = torch.Generator("cpu").manual_seed(seed ^ 0x5A5A5A5A)
    theirs = pipe(
        "a red fox",
        num_inference_steps=6,
        guidance_scale=4.0,
        height=64,
        width=64,
        latents=noise,
        generator=step_generator,
        output_type="latent",
    ).images
    ours = _draw(parts, [seed], "euler_a")
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


def test_an_unknown_sampler_is_invalid_input(parts: imggen.Components) -> None:
    with pytest.raises(InvalidInput, match="scheduler"):
        _draw(parts, [1], "heun")


@pytest.mark.parametrize(
    ("sampler", "yields"), [("ddim", True), ("euler", True), ("euler_a", False)]
)
def test_a_run_that_yields_resumes_to_the_same_images(
    parts: imggen.Components, sampler: str, yields: bool
) -> None:
    """A bulk batch gives way to interactive work at a step boundary, then goes on from there:
    where the sampler keeps no state and draws no noise, the images are the same."""
    from imggen.stages.denoise import DenoiseItem, denoise_batch

    embeddings = imggen.encode_prompt(parts, "a red fox")
    items = [DenoiseItem(embeddings, seed) for seed in (3, 4)]
    shape = {"steps": 8, "height": 64, "width": 64, "guidance": 5.0, "sampler": sampler}
    whole = denoise_batch(parts, items, **shape)  # type: ignore[arg-type]
    asked: list[int] = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) >= 3

    first = denoise_batch(parts, items, should_yield=after_three, **shape)  # type: ignore[arg-type]
    if not yields:  # its step noise would differ: it runs to the end instead
        assert first.yielded_at is None and asked == []
        torch.testing.assert_close(first.latents, whole.latents)
        return
    assert first.yielded_at == 3 and first.unet_steps == 3
    rest = denoise_batch(
        parts,
        items,
        resume=first.latents,
        resume_step=3,
        **shape,  # type: ignore[arg-type]
    )
    assert rest.yielded_at is None and rest.unet_steps == 5
    torch.testing.assert_close(rest.latents, whole.latents, rtol=1e-4, atol=1e-4)
