"""The shapes world: its grammar, its checker (exact on every rendered scene), its tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from imggen.shapes import (
    COLOURS,
    SHAPES,
    Scene,
    adherence,
    caption,
    model,
    parse_caption,
    read_image,
    render,
)
from imggen.shapes.world import all_scenes


def test_captions_follow_the_grammar() -> None:
    assert (
        caption(Scene("yellow", "triangle", "black")) == "a yellow triangle on a black background"
    )
    with pytest.raises(ValueError):
        Scene("red", "circle", "red")
    with pytest.raises(ValueError):
        Scene("teal", "circle", "red")


def test_the_checker_is_right_on_every_rendered_scene() -> None:
    rng = random.Random(0)
    wrong = []
    for scene in all_scenes():
        for _ in range(4):  # sizes and places vary
            reading = read_image(render(scene, rng=rng))
            if (reading.colour, reading.shape, reading.background) != (
                scene.colour,
                scene.shape,
                scene.background,
            ):
                wrong.append((scene, reading))
    assert wrong == [], wrong[:5]


def test_every_caption_parses_back_to_its_scene_and_nothing_else_does() -> None:
    for scene in all_scenes():
        assert parse_caption(caption(scene)) == scene
    assert parse_caption("An orange square on a green background.") == Scene(
        "orange", "square", "green"
    )
    for other in (
        "a red fox",
        "a red circle on a red background",
        "a teal circle on a white background",
    ):
        assert parse_caption(other) is None


def test_adherence_says_which_parts_an_image_gets_right() -> None:
    image = render(Scene("blue", "cross", "white"), size=64, rng=random.Random(3))
    assert adherence(image, Scene("blue", "cross", "white")) == {
        "adherence": 1.0,
        "adherence_colour": 1.0,
        "adherence_shape": 1.0,
        "adherence_background": 1.0,
    }
    assert adherence(image, Scene("blue", "circle", "black")) == {
        "adherence": 0.0,
        "adherence_colour": 1.0,
        "adherence_shape": 0.0,
        "adherence_background": 0.0,
    }


def test_the_checker_reads_scenes_at_the_models_size() -> None:
    rng = random.Random(1)
    readings = [
        adherence(render(scene, size=64, rng=rng), scene)["adherence"] for scene in all_scenes()
    ]
    assert readings == [1.0] * len(readings)


def test_the_word_tokenizer_keeps_the_worlds_words_whole(tmp_path: Path) -> None:
    tokenizer = model.word_tokenizer(tmp_path)
    ids = tokenizer("a yellow triangle on a black background").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<|startoftext|>",
        *(f"{word}</w>" for word in ["a", "yellow", "triangle", "on", "a", "black", "background"]),
        "<|endoftext|>",
    ]
    # A word from outside the world is not read as one of its colours or shapes (BPE may
    # still end it in a piece such as "on</w>": "crimson" is cr-i-m-s-on).
    pieces = tokenizer.tokenize("crimson")
    assert len(pieces) > 1
    assert not set(pieces) & {f"{word}</w>" for word in (*COLOURS, *SHAPES)}
