"""The shapes world's checker reads every rendered scene exactly."""

from __future__ import annotations

import random

import pytest

from imggen.shapes import Scene, caption, read_image, render
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
