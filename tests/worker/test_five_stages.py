"""The five stages with every model configured (expander, captioner, CLIP), via a real worker."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from imggen.tiny import make_tiny_captioner, make_tiny_clip, make_tiny_expander
from producer.db import session_scope
from producer.errors import InvalidJobSpec
from producer.models import Job
from testbed.deployments import Deployment, embedded, with_worker

pytestmark = pytest.mark.slow
WAIT_S = 180.0
SMALL: dict[str, Any] = {"n": 2, "seed": 7, "steps": 4, "width": 64, "height": 64}
STYLE_WORDS = ["cinematic", "golden hour", "oil painting", "hdr"]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Deployment]:
    models = tmp_path_factory.mktemp("aux-models")
    words = models / "style-words.txt"
    words.write_text("\n".join(STYLE_WORDS) + "\n")
    dep = embedded(
        "full",
        tmp_path_factory.mktemp("full"),
        tiny_model_dir,
        expand_model=str(make_tiny_expander(models / "expander")),
        expand_words_file=str(words),
        expand_max_new_tokens="16",
        caption_model=str(make_tiny_captioner(models / "captioner")),
        clip_model=str(make_tiny_clip(models / "clip")),
    )
    yield from with_worker(dep)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = Image.new("RGB", (96, 80), (30, 90, 200))
    image.paste((250, 220, 40), (20, 20, 60, 50))
    path = tmp_path_factory.mktemp("inputs") / "photo.jpg"
    image.save(path, format="JPEG")
    return path


def _notes(info: dict[str, Any]) -> list[str]:
    return [note for stage in info["stages"] for note in stage["notes"]]


def test_text_to_image_with_expansion(full: Deployment) -> None:
    first = full.client.submit("a red fox", expand=True, **SMALL).wait(timeout=WAIT_S)
    again = full.client.submit("a red fox", expand=True, **SMALL).wait(timeout=WAIT_S)
    assert first["status"] == "succeeded", first
    assert first["prompt"] == "a red fox"
    added = first["expanded_prompt"].removeprefix("a red fox")
    assert all(word.strip() in STYLE_WORDS for word in added.split(",") if word.strip())
    assert again["expanded_prompt"] == first["expanded_prompt"]  # same prompt, seed, model
    # The second ran no language model: its expansion came from the worker's cache.
    assert [info["expansion"]["cached"] for info in (first, again)] == [False, True]
    for image in first["images"]:
        assert {"clip_score", "sharpness", "contrast", "colorfulness", "entropy"} == set(
            image["metrics"]
        )
    assert _notes(first) == []


def test_image_to_image_with_a_prompt(full: Deployment, photo: Path) -> None:
    info = full.client.submit("a yellow box", image=photo, strength=0.5, **SMALL).wait(
        timeout=WAIT_S
    )
    assert info["status"] == "succeeded", info
    assert info["caption"] is None and info["expanded_prompt"] == "a yellow box"
    assert Image.open(info["input_image"]).size == (96, 80)  # stored as uploaded
    for image in info["images"]:
        assert Image.open(image["uri"]).size == (64, 64)
        assert {"mse", "psnr", "ssim", "clip_score"} <= set(image["metrics"])


def test_image_to_image_without_a_prompt_is_captioned(full: Deployment, photo: Path) -> None:
    handle = full.client.submit(image=photo.read_bytes(), **SMALL)
    info = handle.wait(timeout=WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["prompt"] is None
    assert info["caption"] and info["expanded_prompt"] == info["caption"]
    assert all("clip_score" in image["metrics"] for image in info["images"])


def test_best_of_n_keeps_one_and_records_the_rest(full: Deployment) -> None:
    info = full.client.submit(
        "a lighthouse", n=4, seed=3, steps=4, width=64, height=64, keep_best=1, rank_by="sharpness"
    ).wait(timeout=WAIT_S)
    assert info["status"] == "succeeded", info
    assert len(info["images"]) == 4
    kept = [image for image in info["images"] if not image["discarded"]]
    assert len(kept) == 1
    best = max(image["metrics"]["sharpness"] for image in info["images"])
    assert kept[0]["metrics"]["sharpness"] == best
    assert all(Path(image["uri"]).exists() for image in info["images"])  # discarded, not lost


def test_bad_input_images_write_nothing(full: Deployment, tmp_path: Path) -> None:
    artifacts = Path(full.settings.resolved_artifacts_url)

    def stored_inputs() -> int:
        return len(list(artifacts.glob("jobs/*/input.*")))

    with session_scope(full.settings.resolved_database_url) as session:
        jobs_before, inputs_before = (
            session.scalar(select(func.count()).select_from(Job)),
            stored_inputs(),
        )
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    for data in (b"not an image", gif.getvalue()):
        with pytest.raises(InvalidJobSpec) as caught:
            full.client.submit("a fox", image=data, **SMALL)
        assert list(caught.value.errors) == ["image"]
    with pytest.raises(InvalidJobSpec, match="image"):
        full.client.submit("a fox", image=tmp_path / "missing.png", **SMALL)
    with pytest.raises(InvalidJobSpec, match="prompt"):
        full.client.submit(**SMALL)  # neither a prompt nor an image
    with session_scope(full.settings.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
    assert stored_inputs() == inputs_before
    assert full.queued_messages() == 0


def test_cli_image_to_image_keep_best_and_metrics(full: Deployment, photo: Path) -> None:
    done = full.cli(
        "submit",
        "--image",
        str(photo),
        "--strength",
        "0.6",
        "--n",
        "3",
        "--keep-best",
        "1",
        "--by",
        "clip_score",
        "--steps",
        "4",
        "--size",
        "64x64",
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["caption"] and sum(not image["discarded"] for image in job["images"]) == 1

    metrics = full.cli("metrics", job["id"], "--json")
    assert metrics.returncode == 0, metrics.stderr
    listed = json.loads(metrics.stdout)
    assert {"clip_score", "ssim", "psnr", "mse"} <= set(listed["images"][0]["metrics"])
    status = full.cli("status", job["id"])
    assert "caption:" in status.stdout and "(discarded)" in status.stdout
