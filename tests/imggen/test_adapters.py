"""LoRA per job: an adapter changes what a model draws exactly as diffusers' own LoRA loader
does, switching it off gives the plain model back, and adapters that are missing or do not fit
are refused as invalid input with the model left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

import imggen
from imggen import InvalidInput, load_components
from imggen.adapters import Adapter, use_adapters
from imggen.errors import ModelNotFound
from imggen.tiny import make_tiny_lora, make_tiny_sd3, make_tiny_sdxl

RUN = {"steps": 4, "height": 64, "width": 64, "guidance": 4.0}


@pytest.fixture(scope="module")
def folders(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "sd": tiny_model_dir,
        "sdxl": make_tiny_sdxl(root / "sdxl"),
        "sd3": make_tiny_sd3(root / "sd3"),
    }


@pytest.fixture(scope="module")
def loras(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    made = {}
    for family, folder in folders.items():
        for seed, style in enumerate(("ink", "neon")):
            made[f"{family}-{style}"] = make_tiny_lora(root, folder, f"{family}-{style}", seed)
    return made


def _draw(parts: imggen.Components, seed: int = 3) -> torch.Tensor:
    embeddings = imggen.encode_prompt(parts, "a red fox")
    return imggen.denoise(parts, embeddings, seeds=[seed], **RUN)


def _diffusers(folder: Path, adapters: list[Adapter], seed: int = 3) -> torch.Tensor:
    pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    for adapter in adapters:
        pipe.load_lora_weights(
            str(adapter.path.parent), weight_name=adapter.path.name, adapter_name=adapter.name
        )
    pipe.set_adapters([a.name for a in adapters], [a.weight for a in adapters])
    channels = pipe.vae.config.latent_channels
    noise = torch.randn((1, channels, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))
    return pipe(
        "a red fox",
        num_inference_steps=RUN["steps"],
        guidance_scale=RUN["guidance"],
        height=RUN["height"],
        width=RUN["width"],
        latents=noise,
        output_type="latent",
    ).images


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3"])
def test_adapters_draw_what_diffusers_draws_and_switch_off_to_the_plain_model(
    folders: dict[str, Path], loras: dict[str, Path], family: str
) -> None:
    parts = load_components(folders[family], device="cpu")
    plain = _draw(parts)
    ink = Adapter("ink", loras[f"{family}-ink"], 0.8)
    neon = Adapter("neon", loras[f"{family}-neon"], 0.5)

    use_adapters(parts, [ink])
    one = _draw(parts)
    assert not torch.allclose(one, plain, atol=1e-2)  # it changes the image
    assert torch.allclose(one, _diffusers(folders[family], [ink]), atol=1e-4)

    use_adapters(parts, [ink, neon])
    both = _draw(parts)
    assert not torch.allclose(both, one, atol=1e-2)
    assert torch.allclose(both, _diffusers(folders[family], [ink, neon]), atol=1e-4)

    use_adapters(parts, [])
    assert torch.equal(_draw(parts), plain)  # no residue: the base weights are untouched
    use_adapters(parts, [Adapter("ink", ink.path, 0.0)])
    assert torch.allclose(_draw(parts), plain, atol=1e-5)
    use_adapters(parts, [ink])
    assert torch.equal(_draw(parts), one)  # switched back without loading it again


def test_a_missing_or_unfitting_adapter_is_invalid_and_leaves_the_model_as_it_was(
    folders: dict[str, Path], loras: dict[str, Path], tmp_path: Path
) -> None:
    parts = load_components(folders["sdxl"], device="cpu")
    plain = _draw(parts)
    with pytest.raises(ModelNotFound, match="loras: no adapter 'gone'"):
        use_adapters(parts, [Adapter("gone", tmp_path / "gone.safetensors")])
    # A LoRA of another model's layers (the SD one on SDXL: other attention widths).
    with pytest.raises(InvalidInput, match="loras: 'ink' does not fit this model"):
        use_adapters(parts, [Adapter("ink", loras["sd-ink"])])
    use_adapters(parts, [])
    assert torch.equal(_draw(parts), plain)
