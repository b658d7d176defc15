"""The model imggen ships, through a real worker: the default when no model is configured,
prompts in other words mapped onto its vocabulary, images scored for adherence."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imggen.shapes import parse_caption
from testbed.deployments import Deployment, embedded, with_worker
from testbed.tiny_gguf import write_tiny_gguf
from testbed.tiny_wordnet import write_tiny_wordnet

pytestmark = pytest.mark.slow
WAIT_S = 180.0
JOB: dict[str, Any] = {"n": 2, "seed": 3, "steps": 25, "width": 64, "height": 64, "guidance": 4.0}
ADHERENCE = {"adherence", "adherence_colour", "adherence_shape", "adherence_background"}
NO_CLIP = "clip_score skipped: no CLIP model configured (IMGGEN_CLIP_MODEL)"


def _notes(info: dict[str, Any]) -> list[str]:
    return [note for stage in info["stages"] for note in stage["notes"]]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("shapes")
    # The bare name, with no such folder under the models dir: the shipped model. A WordNet of a
    # few words, so that what the dictionary decides does not depend on the system's copy.
    wordnet = str(write_tiny_wordnet(home / "wordnet"))
    yield from with_worker(embedded("shapes", home, Path("shapes"), wordnet=wordnet))


def test_a_caption_is_drawn_and_scored_for_adherence(shapes: Deployment) -> None:
    info = shapes.client.submit("a yellow triangle on a black background", **JOB).wait(WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["expanded_prompt"] == "a yellow triangle on a black background"
    for image in info["images"]:
        assert set(image["metrics"]) >= ADHERENCE
        assert {image["metrics"][name] for name in ADHERENCE} <= {0.0, 1.0}
    assert _notes(info) == [NO_CLIP]


def test_a_paraphrase_is_mapped_onto_the_models_words(shapes: Deployment) -> None:
    info = shapes.client.submit("a cherry-red ball on a cloud-white field", **JOB).wait(WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["prompt"] == "a cherry-red ball on a cloud-white field"
    assert info["expanded_prompt"] == "a red circle on a white background"
    assert all(set(image["metrics"]) >= ADHERENCE for image in info["images"])


def test_words_that_only_the_dictionary_knows_are_mapped_by_their_definitions(
    shapes: Deployment,
) -> None:
    info = shapes.client.submit("a carrot wedge on a pearl canvas", **JOB).wait(WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["expanded_prompt"] == "a orange triangle on a white background"
    assert info["expansion"]["mapped_by"] == ["dictionary"]
    assert all(set(image["metrics"]) >= ADHERENCE for image in info["images"])


def test_a_prompt_outside_the_world_is_drawn_but_not_scored(shapes: Deployment) -> None:
    info = shapes.client.submit("a fox", **JOB).wait(WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["expanded_prompt"] == "a fox"
    assert all(not ADHERENCE & set(image["metrics"]) for image in info["images"])
    assert _notes(info) == [
        "vocabulary mapping skipped: the prompt names no figure and ground",
        NO_CLIP,
        "adherence skipped: the prompt is not a caption of the shapes world",
    ]


def test_a_paraphrase_in_any_order_is_mapped_and_paraphrases_hit_the_cache(
    shapes: Deployment,
) -> None:
    # Ground first, colours the table knows ("coal-black", "lemon"), a shape the embedder maps.
    first = shapes.client.submit("beneath a coal-black sky, a small lemon disc", **JOB)
    info = first.wait(WAIT_S)
    assert info["status"] == "succeeded", info
    assert info["expanded_prompt"] == "a yellow circle on a black background"
    assert info["expansion"]["mapped_by"] == ["embedder", "table"]
    # The same scene in other words, same seed: the canonical caption hits the exact cache.
    again = shapes.client.submit("a lemon-yellow dot against a jet-black backdrop", **JOB)
    info = again.wait(WAIT_S)
    assert info["expanded_prompt"] == "a yellow circle on a black background"
    assert (info["cache"]["exact_hits"], info["cache"]["unet_steps"]) == (2, 0)


def test_with_canonical_prompts_off_paraphrases_pass_as_written(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("plain")
    dep = embedded("plain", home, Path("shapes"), canonical_prompts="false")
    for ready in with_worker(dep):
        info = ready.client.submit("a cherry-red ball on a cloud-white field", **JOB).wait(WAIT_S)
        assert info["status"] == "succeeded", info
        assert info["expanded_prompt"] == "a cherry-red ball on a cloud-white field"


def test_an_imported_language_model_helps_map(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A GGUF imported with `imggen models import` into the models folder is the default
    expander (IMGGEN_EXPAND_MODEL=auto): for the shapes model it scores the shape words that
    neither the world nor the colour table knows."""
    home = tmp_path_factory.mktemp("lm")
    gguf = write_tiny_gguf(home / "tiny-llama.gguf")
    dep = embedded("lm", home, Path("shapes"), embed_model="none", wordnet="none")
    imported = subprocess.run(
        [sys.executable, "-m", "worker.cli", "models", "import", str(gguf)]
        + ["--name", "smollm2-135m-instruct"],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    folder = home / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    for ready in with_worker(dep):
        info = ready.client.submit("a ruby orb on a snow canvas", **JOB).wait(WAIT_S)
        assert info["status"] == "succeeded", info
        assert info["expansion"]["mapped_by"] == ["language model", "table"]
        assert info["expansion"]["expander"] == folder.name
        scene = parse_caption(info["expanded_prompt"])
        assert scene is not None and (scene.colour, scene.background) == ("red", "white")
