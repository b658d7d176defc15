"""The language stages (expansion, captioning), image-to-image, and the metrics, on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import imggen
from imggen import InvalidInput, ModelNotFound
from imggen.stages.score import PSNR_CAP, best_of, clip_scores, reference_metrics
from imggen.tiny import make_tiny_captioner, make_tiny_clip, make_tiny_expander

STYLE_WORDS = ["cinematic", "art", "artistic", "hdr", "soft light"]


@pytest.fixture(scope="module")
def expander(tmp_path_factory: pytest.TempPathFactory) -> imggen.LanguageModel:
    return imggen.load_language_model(make_tiny_expander(tmp_path_factory.mktemp("lm")), "cpu")


@pytest.fixture(scope="module")
def captioner(tmp_path_factory: pytest.TempPathFactory) -> imggen.Captioner:
    return imggen.load_captioner(make_tiny_captioner(tmp_path_factory.mktemp("cap")), "cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> imggen.Clip:
    return imggen.load_clip(make_tiny_clip(tmp_path_factory.mktemp("clip")), "cpu")


def _picture(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def test_expansion_is_deterministic_per_seed_and_keeps_the_prompt_first(
    expander: imggen.LanguageModel,
) -> None:
    first = imggen.expand("a red fox", expander, seed=1, max_new_tokens=12)
    again = imggen.expand("a red fox", expander, seed=1, max_new_tokens=12)
    others = {
        imggen.expand("a red fox", expander, seed=s, max_new_tokens=12).prompt for s in range(2, 6)
    }
    assert first == again
    assert first.expanded and first.prompt.startswith("a red fox, ")
    assert others - {first.prompt}, "other seeds should give other expansions"
    assert first.prompt.isprintable()


def test_expansion_adds_only_allowed_words_within_the_token_bound(
    expander: imggen.LanguageModel,
) -> None:
    for seed in range(8):
        result = imggen.expand(
            "a red fox", expander, seed=seed, max_new_tokens=20, allowed_words=STYLE_WORDS
        )
        added = result.prompt.removeprefix("a red fox")
        # Byte-level tokenizer: one ASCII character is one token.
        assert len(added) <= 20
        words = [piece.strip() for piece in added.split(",") if piece.strip()]
        assert all(word in STYLE_WORDS for word in words), result.prompt


def test_without_an_expander_the_prompt_passes_through() -> None:
    result = imggen.expand("  a red   fox ")
    assert (result.prompt, result.expanded) == ("a red fox", False)


def test_captions_are_words_and_the_same_for_the_same_image(captioner: imggen.Captioner) -> None:
    first = imggen.caption(captioner, _picture((200, 20, 20)))
    assert first and first.isprintable()
    assert imggen.caption(captioner, _picture((200, 20, 20))) == first


def test_image_to_image_stays_closer_to_the_input_at_low_strength(tiny_model_dir: Path) -> None:
    parts = imggen.load_components(tiny_model_dir, "cpu")
    embeddings = imggen.encode_prompt(parts, "a fox")
    start = imggen.encode_image(parts, _picture((20, 200, 20), (80, 40)), 64, 64)
    assert start.shape == (1, 4, 8, 8)

    def distance(strength: float) -> float:
        latents = imggen.denoise(
            parts,
            embeddings,
            seeds=[3],
            steps=10,
            height=64,
            width=64,
            image_latents=start,
            strength=strength,
        )
        return float((latents - start).pow(2).mean())

    assert distance(0.2) < distance(0.6) < distance(1.0)
    with pytest.raises(InvalidInput, match="strength"):
        imggen.denoise(
            parts,
            embeddings,
            seeds=[3],
            steps=4,
            height=64,
            width=64,
            image_latents=start,
            strength=0.0,
        )


def test_clip_score_follows_its_definition(clip: imggen.Clip) -> None:
    images = [_picture((200, 20, 20)), _picture((20, 20, 200))]
    scores = clip_scores(clip, images, "a red square")
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)
    assert clip_scores(clip, images[:1], "a red square") == pytest.approx(scores[:1])
    # max(100 * cos(image, text), 0), from the model's own projections.
    inputs = clip.processor(text=["a red square"], images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = clip.model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(output.image_embeds, output.text_embeds)
    assert scores == pytest.approx((100 * cosine).clamp(min=0).tolist(), abs=1e-4)


def test_reference_metrics() -> None:
    image = _picture((200, 20, 20))
    same = reference_metrics(image, image.copy())
    assert (
        same["mse"] == 0.0
        and same["psnr"] == PSNR_CAP
        and same["ssim"] == pytest.approx(1.0, abs=1e-4)
    )
    other = reference_metrics(image, _picture((20, 20, 200), (32, 32)))  # resized to match
    assert other["mse"] > 0.01 and other["psnr"] < 30 and other["ssim"] < same["ssim"]


def test_best_of_ranks_by_the_metric_and_its_direction() -> None:
    scores = [
        {"sharpness": 0.1, "mse": 0.3},
        {"sharpness": 0.5, "mse": 0.1},
        {"sharpness": 0.3, "mse": 0.2},
    ]
    assert best_of(scores, "sharpness", 1) == ([1], None)
    assert best_of(scores, "sharpness", 2) == ([1, 2], None)
    assert best_of(scores, "mse", 1) == ([1], None)  # lower is better
    kept, why = best_of(scores, "clip_score", 1)
    assert kept == [0, 1, 2] and why is not None and "clip_score" in why


def test_aux_models_load_only_from_safetensors_folders(tmp_path: Path) -> None:
    for loader in (imggen.load_language_model, imggen.load_captioner, imggen.load_clip):
        with pytest.raises(ModelNotFound):
            loader(tmp_path / "missing")
    folder = make_tiny_expander(tmp_path / "lm")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFound, match="expand_model"):
        imggen.load_language_model(folder)
