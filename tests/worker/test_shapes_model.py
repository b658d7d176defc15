"""The model imggen ships, through a real worker: the default when no model is configured,
prompts in other words mapped onto its vocabulary, images scored for adherence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.deployments import Deployment, embedded, with_worker

pytestmark = pytest.mark.slow
WAIT_S = 180.0
JOB: dict[str, Any] = {"n": 2, "seed": 3, "steps": 25, "width": 64, "height": 64, "guidance": 4.0}
ADHERENCE = {"adherence", "adherence_colour", "adherence_shape", "adherence_background"}
NO_CLIP = "clip_score skipped: no CLIP model configured (IMGGEN_CLIP_MODEL)"


def _notes(info: dict[str, Any]) -> list[str]:
    return [note for stage in info["stages"] for note in stage["notes"]]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # The bare name, with no such folder under the models dir: the shipped model.
    yield from with_worker(embedded("shapes", tmp_path_factory.mktemp("shapes"), Path("shapes")))


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


def test_without_an_embedder_paraphrases_pass_as_written(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dep = embedded("plain", tmp_path_factory.mktemp("plain"), Path("shapes"), embed_model="none")
    for ready in with_worker(dep):
        info = ready.client.submit("a cherry-red ball on a cloud-white field", **JOB).wait(WAIT_S)
        assert info["status"] == "succeeded", info
        assert info["expanded_prompt"] == "a cherry-red ball on a cloud-white field"
        assert "vocabulary mapping skipped: no sentence embedder (IMGGEN_EMBED_MODEL)" in _notes(
            info
        )
