"""The five stages on the tiny model: shapes, seeds, round trips, input checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import imggen
from imggen import InvalidInput, ModelNotFound, StageAborted, load_components
from imggen.tiny import make_tiny, make_tiny_pipeline


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path) -> imggen.Components:
    return load_components(tiny_model_dir, device="cpu")


def _generate(parts: imggen.Components, prompt: str, seeds: list[int]) -> torch.Tensor:
    embeddings = imggen.encode_prompt(parts, imggen.expand(prompt).prompt)
    return imggen.denoise(
        parts, embeddings, seeds=seeds, steps=4, height=64, width=48, guidance=5.0
    )


def test_expand_normalises_whitespace_and_rejects_empty() -> None:
    assert imggen.expand("  a red\n fox ").prompt == "a red fox"
    with pytest.raises(InvalidInput, match="prompt"):
        imggen.expand("   ")


def test_encode_gives_one_embedding_per_prompt(parts: imggen.Components) -> None:
    embeddings = imggen.encode_prompt(parts, "a red fox", "blurry")
    hidden = parts.text_encoder.config.hidden_size
    assert embeddings.cond.shape == (1, parts.tokenizer.model_max_length, hidden)
    assert embeddings.uncond.shape == embeddings.cond.shape
    assert not torch.equal(embeddings.cond, embeddings.uncond)
    again = imggen.PromptEmbeddings.from_tensors(embeddings.to_tensors())
    assert torch.equal(again.cond, embeddings.cond)


def test_denoise_shapes_follow_size_and_seeds(parts: imggen.Components) -> None:
    latents = _generate(parts, "a red fox", [1, 2, 3])
    assert latents.shape == (3, 4, 64 // 8, 48 // 8)
    assert torch.isfinite(latents).all()


def test_same_seed_same_image_other_seed_other_image(parts: imggen.Components) -> None:
    first = _generate(parts, "a red fox", [7])
    again = _generate(parts, "a red fox", [7])
    other = _generate(parts, "a red fox", [8])
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_an_image_does_not_depend_on_its_batch(parts: imggen.Components) -> None:
    alone = _generate(parts, "a red fox", [11])
    batched = _generate(parts, "a red fox", [5, 11, 12])
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-4, atol=1e-4)


def test_progress_callback_sees_every_step_and_can_abort(parts: imggen.Components) -> None:
    embeddings = imggen.encode_prompt(parts, "a fox")
    seen: list[tuple[int, int]] = []
    imggen.denoise(
        parts,
        embeddings,
        seeds=[1],
        steps=3,
        height=32,
        width=32,
        on_step=lambda step, total: seen.append((step, total)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]

    def stop(step: int, total: int) -> None:
        raise StageAborted("canceled")

    with pytest.raises(StageAborted):
        imggen.denoise(parts, embeddings, seeds=[1], steps=3, height=32, width=32, on_step=stop)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"height": 60}, "height"),
        ({"width": 0}, "width"),
        ({"steps": 0}, "steps"),
        ({"seeds": []}, "seeds"),
    ],
)
def test_denoise_rejects_bad_arguments_naming_them(
    parts: imggen.Components, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"seeds": [1], "steps": 2, "height": 32, "width": 32} | kwargs
    embeddings = imggen.encode_prompt(parts, "a fox")
    with pytest.raises(InvalidInput, match=field):
        imggen.denoise(parts, embeddings, **arguments)  # type: ignore[arg-type]


def test_decode_gives_rgb_images_of_the_requested_size(parts: imggen.Components) -> None:
    images = imggen.decode(parts, _generate(parts, "a fox", [1, 2]))
    assert [image.size for image in images] == [(48, 64), (48, 64)]
    assert all(image.mode == "RGB" for image in images)
    png = imggen.png_bytes(images[0])
    assert png.startswith(b"\x89PNG")


def test_score_metrics_respond_to_the_image() -> None:
    flat = Image.new("RGB", (32, 32), (128, 128, 128))
    checker = Image.new("RGB", (32, 32))
    checker.putdata(
        [(255, 0, 0) if (x + y) % 2 else (0, 0, 255) for y in range(32) for x in range(32)]
    )
    flat_scores, busy_scores = imggen.score(flat), imggen.score(checker)
    assert set(flat_scores) == {"sharpness", "contrast", "colorfulness", "entropy"}
    assert flat_scores == {"sharpness": 0.0, "contrast": 0.0, "colorfulness": 0.0, "entropy": 0.0}
    assert busy_scores["sharpness"] > 0.01
    assert busy_scores["contrast"] > 0.05
    assert busy_scores["colorfulness"] > 100
    assert busy_scores["entropy"] == pytest.approx(1.0)


def test_saved_model_loads_back_to_the_same_outputs(tmp_path: Path) -> None:
    in_memory = make_tiny_pipeline(seed=3)
    loaded = load_components(make_tiny(tmp_path / "m", seed=3), device="cpu")
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = in_memory.unet(sample, 10, encoder_hidden_states=context).sample
        actual = loaded.unet(sample, 10, encoder_hidden_states=context).sample
    assert torch.equal(expected, actual)
    assert loaded.tokenizer("a red fox").input_ids == in_memory.tokenizer("a red fox").input_ids
    assert sorted(p.name for p in (tmp_path / "m" / "unet").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]


def test_loading_refuses_missing_folders_and_pickle_weights(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    with pytest.raises(ModelNotFound, match="model"):
        load_components(tmp_path / "nowhere")
    # A copy whose UNet weights exist only as a pickle file must not load.
    import shutil

    copy = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelNotFound, match="model"):
        load_components(copy)


def test_model_cache_loads_once_and_evicts_least_recent(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    other = make_tiny(tmp_path / "other", seed=1)
    third = make_tiny(tmp_path / "third", seed=2)
    cache = imggen.ModelCache(device="cpu", max_models=2)
    first = cache.get(tiny_model_dir)
    assert cache.get(tiny_model_dir) is first
    cache.get(other)
    cache.get(third)  # evicts tiny_model_dir, the least recently used
    assert cache.loads == 3
    assert cache.get(tiny_model_dir) is not first
    assert cache.loads == 4


def test_a_failed_read_of_a_complete_model_folder_is_worth_retrying(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import shutil

    from imggen import ModelLoadError
    from worker.queue.retry import FailureKind, classify

    copy = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError) as caught:
        load_components(copy)
    # Not "invalid input": an interrupted or flaky read is retried, a missing model is not.
    assert classify(caught.value) is FailureKind.TRANSIENT
    assert classify(ModelNotFound("model: gone")) is FailureKind.INVALID
    # The code and the job do not fit (a UNet wanting conditioning it is not given): no retry.
    assert classify(TypeError("argument of type 'NoneType' is not iterable")) is (
        FailureKind.PROGRAMMING
    )
