"""The dictionary source of the shapes model's mapping: WordNet's files read, and definitions
deciding the colours and shapes that the table and the world do not name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imggen.shapes.dictionary import NOUN_SHAPE, Dictionary, installed_dictionary
from imggen.shapes.vocabulary import VocabularyMap
from testbed.tiny_wordnet import write_tiny_wordnet
from worker.settings import WorkerSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Dictionary:
    return Dictionary(write_tiny_wordnet(tmp_path_factory.mktemp("wordnet")))


def test_senses_come_most_frequent_first_with_their_definitions(tiny: Dictionary) -> None:
    senses = tiny.senses("carrot")
    assert [s.definition for s in senses] == [
        "deep orange edible root of the cultivated carrot plant",
        "promise of reward",  # the examples after ";" are not part of it
    ]
    assert [s.rank for s in senses] == [0, 1]
    assert [s.definition for s in tiny.senses("carrot", most=1)] == [senses[0].definition]


def test_plurals_capitals_and_adjectives_are_found(tiny: Dictionary) -> None:
    assert [s.words for s in tiny.senses("Pearls")] == [("pearl",), ("pearl", "bone", "ivory")]
    assert [(s.part_of_speech, s.definition) for s in tiny.senses("inky")] == [
        ("adj", "of the color of black ink")
    ]
    # The first and the last lemma of the index, and words on either side of all of them.
    assert tiny.senses("wedge") and tiny.senses("tile")
    assert tiny.senses("aardvark") == tiny.senses("zebra") == tiny.senses("") == []


def test_the_adjectives_derived_from_a_shape(tiny: Dictionary) -> None:
    assert tiny.derived_adjectives("triangle", NOUN_SHAPE) == {"triangular"}
    assert tiny.derived_adjectives("triangle", topic=6) == set()  # no sense of that topic
    assert tiny.derived_adjectives("circle", NOUN_SHAPE) == set()


def test_a_folder_without_wordnet_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.noun"):
        Dictionary(tmp_path)
    assert installed_dictionary(tmp_path) is None


def test_definitions_decide_what_the_table_and_the_world_do_not_name(tiny: Dictionary) -> None:
    mapping = VocabularyMap(dictionary=tiny).map("a carrot wedge on a pearl canvas")
    assert mapping is not None
    assert mapping.prompt == "a orange triangle on a white background"
    assert mapping.sources == ("dictionary",)
    # Without it, the table knows neither word: the world's first colours and shape.
    assert VocabularyMap().map("a carrot wedge on a pearl canvas") != mapping


def test_the_table_decides_first_and_a_modifier_before_the_head(tiny: Dictionary) -> None:
    vocabulary = VocabularyMap(dictionary=tiny)
    # "tile" is defined by "fired clay", a colour of the table: no colour term, so no colour.
    mapping = vocabulary.map("an inky tile beneath a carrot sky")
    assert mapping is not None and mapping.scene.colour == "black"
    assert mapping.scene.background == "orange"  # carrot modifies sky, which the table names
    ruby = vocabulary.map("a ruby wedge on a snow field")
    assert ruby is not None and ruby.prompt == "a red triangle on a white background"
    assert ruby.sources == ("dictionary", "table")


_SYSTEM = installed_dictionary()


@pytest.mark.skipif(_SYSTEM is None, reason="no WordNet in /usr/share/wordnet (wordnet-base)")
def test_the_systems_wordnet_knows_carrots_and_wedges() -> None:
    assert _SYSTEM is not None
    assert "orange" in _SYSTEM.senses("carrot")[0].definition
    assert {"circular", "round"} <= _SYSTEM.derived_adjectives("circle", NOUN_SHAPE)
    mapping = VocabularyMap(dictionary=_SYSTEM).map("beneath an ebony sky, a small carrot wedge")
    assert mapping is not None and mapping.prompt == "a orange triangle on a black background"


def test_a_worker_refuses_a_wordnet_setting_that_names_no_wordnet(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="wordnet: not a WordNet database folder"):
        WorkerSettings(home=tmp_path, wordnet=str(tmp_path))
    folder = write_tiny_wordnet(tmp_path / "wordnet")
    assert WorkerSettings(home=tmp_path, wordnet=str(folder)).wordnet_folder() == folder
    for off_or_auto in ("none", "NONE", "auto"):
        assert WorkerSettings(home=tmp_path, wordnet=off_or_auto).wordnet_folder() is None
