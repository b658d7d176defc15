"""Model families: each family's staged path draws what diffusers' own pipeline draws on the same
folder, batched equals alone, and folders imggen cannot run are refused from their configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

import imggen
from imggen import InvalidInput, load_components
from imggen.errors import UnsupportedModel
from imggen.samplers import SAMPLERS
from imggen.stages.denoise import DenoiseItem, denoise_batch
from imggen.tiny import make_tiny_sd3, make_tiny_sdxl

PIPELINES = {
    "sd": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "sd3": StableDiffusion3Pipeline,
}
FAMILIES = list(PIPELINES)
STEPS, SIDE, GUIDANCE = 6, 64, 4.0
PROMPT = "a red fox in the snow"


@pytest.fixture(scope="module")
def folders(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "sd": tiny_model_dir,
        "sdxl": make_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "m"),
        "sd3": make_tiny_sd3(tmp_path_factory.mktemp("sd3") / "m"),
    }


@pytest.fixture(scope="module")
def loaded(folders: dict[str, Path]) -> dict[str, imggen.Components]:
    return {family: load_components(folder, device="cpu") for family, folder in folders.items()}


def _theirs(folder: Path, family: str, prompt: str, negative: str, seed: int, sampler: str | None):
    kwargs = {"safety_checker": None, "requires_safety_checker": False} if family == "sd" else {}
    pipe = PIPELINES[family].from_pretrained(folder, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if sampler is not None:
        cls, overrides = SAMPLERS[sampler]
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)
    channels = pipe.vae.config.latent_channels
    noise = torch.randn((1, channels, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))
    common = dict(
        prompt=prompt,
        # Diffusers' SDXL zeros the unconditional half only when no negative prompt is given.
        negative_prompt=negative or None,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        height=SIDE,
        width=SIDE,
        latents=noise,
    )
    latents = pipe(**common, output_type="latent").images
    image = pipe(**common, output_type="pil").images[0]
    return latents, image


@pytest.mark.parametrize(
    ("family", "negative", "sampler"),
    [
        ("sd", "", None),
        ("sd", "blurry, dark", "dpmpp_2m"),
        ("sdxl", "", None),
        ("sdxl", "blurry, dark", "dpmpp_2m"),
        ("sd3", "", None),  # flow matching: its own sampler only
        ("sd3", "blurry, dark", None),
    ],
)
def test_the_staged_path_draws_what_diffusers_draws(
    folders: dict[str, Path],
    loaded: dict[str, imggen.Components],
    family: str,
    negative: str,
    sampler: str | None,
) -> None:
    parts = loaded[family]
    assert parts.family.name == family
    seed = 9
    embeddings = imggen.encode_prompt(parts, PROMPT, negative)
    ours = imggen.denoise(
        parts,
        embeddings,
        seeds=[seed],
        steps=STEPS,
        height=SIDE,
        width=SIDE,
        guidance=GUIDANCE,
        sampler=sampler,
    )
    latents, image = _theirs(folders[family], family, PROMPT, negative, seed, sampler)
    assert torch.allclose(ours, latents, atol=1e-4), float((ours - latents).abs().max())
    pixels = np.asarray(imggen.decode(parts, ours)[0], dtype=int)
    assert np.abs(pixels - np.asarray(image, dtype=int)).max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_an_image_is_the_same_batched_or_alone(
    loaded: dict[str, imggen.Components], family: str
) -> None:
    parts = loaded[family]
    fox = imggen.encode_prompt(parts, "a red fox")
    owl = imggen.encode_prompt(parts, "a grey owl at night", "daylight")
    items = [DenoiseItem(fox, 3), DenoiseItem(owl, 4), DenoiseItem(fox, 5)]
    run = dict(steps=4, height=SIDE, width=SIDE, guidance=GUIDANCE)
    together = denoise_batch(parts, items, **run).latents
    for row, item in enumerate(items):
        alone = denoise_batch(parts, [item], **run).latents
        assert torch.allclose(together[row : row + 1], alone, atol=1e-4)
    assert not torch.allclose(together[0], together[1], atol=1e-2)


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_image_to_image_starts_from_the_image(
    loaded: dict[str, imggen.Components], family: str
) -> None:
    parts = loaded[family]
    start = imggen.decode(parts, torch.zeros(1, parts.latent_channels, 8, 8))[0]
    embeddings = imggen.encode_prompt(parts, "a red fox")
    latents = imggen.encode_image(parts, start, SIDE, SIDE)
    run = dict(seeds=[1], steps=STEPS, height=SIDE, width=SIDE, guidance=GUIDANCE)
    light = imggen.denoise(parts, embeddings, image_latents=latents, strength=0.3, **run)
    heavy = imggen.denoise(parts, embeddings, image_latents=latents, strength=1.0, **run)
    assert (light - latents).abs().mean() < (heavy - latents).abs().mean()


def _copy(folder: Path, target: Path, **edits: dict[str, object]) -> Path:
    """A copy of ``folder`` with some keys of its configs changed (``model_index`` or a part)."""
    shutil.copytree(folder, target)
    for part, changes in edits.items():
        path = (
            target / "model_index.json" if part == "model_index" else target / part / "config.json"
        )
        config = json.loads(path.read_text())
        path.write_text(json.dumps(config | changes))
    return target


@pytest.mark.parametrize(
    ("base", "edits", "reason"),
    [
        (
            "sd",
            {"model_index": {"_class_name": "FluxPipeline"}},
            "'FluxPipeline' is not a pipeline",
        ),
        ("sd", {"unet": {"in_channels": 9}}, "inpainting"),
        ("sd", {"unet": {"addition_embed_type": "text_time"}}, "added conditioning"),
        ("sd", {"unet": {"cross_attention_dim": 768}}, "attends to 768"),
        ("sd", {"text_encoder": {"architectures": ["T5EncoderModel"]}}, "T5EncoderModel"),
        ("sdxl", {"model_index": {"requires_aesthetics_score": True}}, "refiner"),
        ("sdxl", {"unet": {"projection_class_embeddings_input_dim": 81}}, "takes 81"),
        ("sd3", {"transformer": {"pooled_projection_dim": 65}}, "65 pooled"),
        ("sd3", {"text_encoder_3": {"d_model": 48}}, "T5 gives 48"),
        ("sd3", {"transformer": {"_class_name": "FluxTransformer2DModel"}}, "Flux"),
    ],
)
def test_a_folder_imggen_cannot_run_is_refused_before_its_weights_load(
    folders: dict[str, Path],
    tmp_path: Path,
    base: str,
    edits: dict[str, dict[str, object]],
    reason: str,
) -> None:
    folder = _copy(folders[base], tmp_path / "model", **edits)
    for weights in folder.glob("*/*.safetensors"):
        weights.unlink()  # refused from the configs alone, before any weights are read
    with pytest.raises(UnsupportedModel, match=reason) as refused:
        load_components(folder, device="cpu")
    assert isinstance(refused.value, InvalidInput)  # no retry mends it


def test_a_sampler_the_family_does_not_step_is_invalid(
    loaded: dict[str, imggen.Components],
) -> None:
    parts = loaded["sd3"]
    embeddings = imggen.encode_prompt(parts, PROMPT)
    with pytest.raises(InvalidInput, match="scheduler: 'ddim' is not a sampler this model runs"):
        imggen.denoise(
            parts, embeddings, seeds=[1], steps=2, height=SIDE, width=SIDE, sampler="ddim"
        )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("negative", ["", "blurry"])
def test_embeddings_go_through_safetensors_and_back(
    loaded: dict[str, imggen.Components], family: str, negative: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    embeddings = imggen.encode_prompt(loaded[family], "a red fox", negative)
    save_file(embeddings.to_tensors(), tmp_path / "e.safetensors")
    back = imggen.PromptEmbeddings.from_tensors(load_file(tmp_path / "e.safetensors"))
    for name, tensor in embeddings.to_tensors().items():
        assert torch.equal(getattr(back, name), tensor), name
    assert (back.cond_pooled is None) == (family == "sd")
