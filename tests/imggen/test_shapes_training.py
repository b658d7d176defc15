"""The shapes model's training script, run for a few steps: what it saves loads like any
Stable Diffusion folder and runs through the stages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import imggen
from imggen.shapes import draws_shapes
from imggen.shapes.model import MAX_TOKENS
from imggen.shapes.train import TrainConfig, train_shapes

FEW = TrainConfig(
    vae_steps=2, vae_batch=2, scenes=16, unet_steps=3, unet_batch=4, checkpoint_every=2
)


def test_a_short_run_saves_a_loadable_model(tmp_path: Path) -> None:
    lines: list[str] = []
    folder = train_shapes(tmp_path / "shapes", FEW, log=lines.append)
    assert sum(line.startswith("saved ") for line in lines) == 2  # at step 2 and at the end
    assert draws_shapes(folder)
    assert not list(folder.rglob("*.bin"))  # safetensors only
    parts = imggen.load_components(folder, "cpu")
    assert parts.vae_scale_factor == 4
    assert parts.tokenizer.model_max_length == MAX_TOKENS
    assert parts.vae.config.scaling_factor != 1.0  # measured on the encoded scenes
    embeddings = imggen.encode_prompt(parts, "a red circle on a white background")
    latents = imggen.denoise(parts, embeddings, seeds=[0], steps=2, height=64, width=64)
    (image,) = imggen.decode(parts, latents)
    assert image.size == (64, 64)


def test_the_same_seed_trains_the_same_weights(tmp_path: Path) -> None:
    first = imggen.load_components(train_shapes(tmp_path / "a", FEW, log=lambda _: None), "cpu")
    second = imggen.load_components(train_shapes(tmp_path / "b", FEW, log=lambda _: None), "cpu")
    for name in ("unet", "text_encoder", "vae"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert all(a[key].equal(b[key]) for key in a), name


def test_a_resumed_run_keeps_the_vae_and_trains_the_unet_on(tmp_path: Path) -> None:
    first = train_shapes(tmp_path / "first", FEW, log=lambda _: None)
    resumed = replace(FEW, resume=str(first), unet_steps=2)
    second = train_shapes(tmp_path / "second", resumed, log=lambda _: None)
    before, after = imggen.load_components(first, "cpu"), imggen.load_components(second, "cpu")
    assert after.vae.config.scaling_factor == before.vae.config.scaling_factor
    vae_before, vae_after = before.vae.state_dict(), after.vae.state_dict()
    assert all(vae_before[key].equal(vae_after[key]) for key in vae_before)
    unet_before, unet_after = before.unet.state_dict(), after.unet.state_dict()
    assert not all(unet_before[key].equal(unet_after[key]) for key in unet_before)
