"""The shapes model imggen ships: small, safetensors only, and it draws what it is asked."""

from __future__ import annotations

import random

import imggen
from imggen.shapes import PRETRAINED, adherence, all_scenes, caption, draws_shapes
from imggen.stages.denoise import DenoiseItem, denoise_batch

MAX_BYTES = 15 * 2**20
GUIDANCE = 4.0
# bench.quality measured 0.98 on every scene at these settings; the margin allows for other
# CPUs' and torch versions' arithmetic, not for a model that got worse.
MIN_ALL_THREE = 0.85


def test_the_shipped_model_is_a_small_safetensors_diffusers_folder() -> None:
    files = [path for path in PRETRAINED.rglob("*") if path.is_file()]
    assert (PRETRAINED / "model_index.json").is_file() and draws_shapes(PRETRAINED)
    weights = [path for path in files if path.suffix in {".safetensors", ".bin", ".pt", ".ckpt"}]
    assert {path.suffix for path in weights} == {".safetensors"}
    assert sum(path.stat().st_size for path in files) < MAX_BYTES


def test_the_shipped_model_draws_what_it_is_asked() -> None:
    # bench.quality measures every scene; this is a sample at the demo's settings.
    parts = imggen.load_components(PRETRAINED, "cpu")
    scenes = random.Random(0).sample(all_scenes(), 32)
    items = [
        DenoiseItem(imggen.encode_prompt(parts, caption(scene)), seed=i)
        for i, scene in enumerate(scenes)
    ]
    latents = denoise_batch(parts, items, steps=25, height=64, width=64, guidance=GUIDANCE).latents
    images = imggen.decode(parts, latents)
    right = [
        adherence(image, scene)["adherence"] for image, scene in zip(images, scenes, strict=True)
    ]
    assert sum(right) / len(right) >= MIN_ALL_THREE, sum(right)
