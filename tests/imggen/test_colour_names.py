"""Colour words through the colour-name table: name -> RGB -> the nearest world colour."""

from __future__ import annotations

import pytest

from imggen.shapes import COLOURS
from imggen.shapes.colour_names import (
    colour_mentions,
    colour_table,
    examples,
    ranked_world_colours,
    vote,
)
from imggen.shapes.vocabulary import VocabularyMap, figure_and_ground


@pytest.mark.parametrize(
    ("name", "world"),
    [
        ("crimson", "red"),
        ("tomato", "red"),
        ("navy", "blue"),
        ("midnight", "black"),
        ("cobalt", "blue"),
        ("grass", "green"),
        ("emerald", "green"),
        ("lemon", "yellow"),
        ("mustard", "yellow"),
        ("plum", "purple"),
        ("tangerine", "orange"),
        ("cream", "white"),
        ("ivory", "white"),
        ("snow", "white"),
        ("charcoal", "black"),
        ("lavender", "purple"),
        # Words made from a colour name take its colour.
        ("reddish", "red"),
        ("bluish", "blue"),
        ("snowy", "white"),
    ],
)
def test_named_colours_land_on_the_nearest_world_colour(name: str, world: str) -> None:
    assert [ranked[0] for _, ranked in colour_mentions(name)] == [world]


def test_the_surveys_own_names_land_on_their_last_word() -> None:
    """Each of the table's "<something> blue" names, taken out of the examples, is told blue by
    the others: the borders between hues are the survey's."""
    named = examples()
    right = sum(
        vote(point, named[:i] + named[i + 1 :]) == world for i, (point, world) in enumerate(named)
    )
    assert len(named) > 300
    assert right / len(named) > 0.9


def test_the_world_colours_are_their_own_nearest() -> None:
    for name, rgb in COLOURS.items():
        assert ranked_world_colours(rgb)[0] == name
        assert sorted(ranked_world_colours(rgb)) == sorted(COLOURS)


def test_longest_names_win_and_modifiers_come_before_the_noun() -> None:
    mentions = colour_mentions("a cherry-red ball")
    assert [(index, ranked[0]) for index, ranked in mentions] == [(2, "red")]
    assert mentions[0][1] == ranked_world_colours(colour_table()["cherry red"])
    # "sky" is a colour of the table too; "black" modifies it and names the ground.
    vocabulary = VocabularyMap()
    mapping = vocabulary.map("beneath a coal-black sky, a small lemon square")
    assert mapping is not None and mapping.prompt == "a yellow square on a black background"
    assert mapping.sources == ("table", "world words")


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("a ruby ball on a snow field", ("a ruby ball", "on a snow field")),
        ("ruby ball, lime surface", ("ruby ball", "lime surface")),
        ("beneath a black sky, a lemon disc", ("a lemon disc", "beneath a black sky")),
        ("a black canvas with a yellow dot", ("with a yellow dot", "a black canvas")),
        ("the colour of grass: a square, on white", ("the colour of grass a square", "on white")),
    ],
)
def test_figure_and_ground_follow_the_words_not_the_order(
    prompt: str, parts: tuple[str, str]
) -> None:
    assert figure_and_ground(prompt) == parts


def test_the_table_alone_maps_what_it_names() -> None:
    mapping = VocabularyMap().map("the colour of grass: a square, on white")
    assert mapping is not None and mapping.prompt == "a green square on a white background"
    assert VocabularyMap().map("a fox") is None
