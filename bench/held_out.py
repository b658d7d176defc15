"""Table 1b of ``bench.language``: each source of the shapes model's mapping on words that
neither ``bench.quality``'s lists nor the mapping use, which tells what generalizes from what
fits the bench's own words."""

from __future__ import annotations

from bench.common import Table
from imggen.shapes.vocabulary import VocabularyMap

# Words of plain colour and shape that neither bench.quality's lists nor the mapping use, to
# tell what generalizes from what fits the bench's words.
HELD_OUT_COLOURS = {
    "red": ["poppy", "ketchup", "lipstick", "cranberry", "garnet", "fire-truck", "strawberry"],
    "orange": ["clementine", "mandarin", "persimmon", "ember", "copper", "traffic-cone", "rust"],
    "yellow": ["banana", "sunshine", "daffodil", "buttercup", "dandelion", "yolk", "taxi"],
    "green": ["moss", "pine", "spinach", "clover", "pea", "cucumber", "fern", "frog"],
    "blue": ["sky", "sea", "denim", "blueberry", "cornflower", "cerulean", "bluebird"],
    "purple": ["lavender", "aubergine", "eggplant", "orchid", "heather", "iris", "wisteria"],
    "white": ["snowy", "frost", "bone", "cream", "paper", "cotton", "milky", "salt", "swan"],
    "black": ["soot", "tar", "raven", "crow", "charcoal", "onyx", "jet", "coal", "night"],
}
HELD_OUT_SHAPES = {
    "circle": ["ring", "hoop", "sphere", "coin", "wheel", "bubble", "marble", "moon", "button"],
    "square": ["crate", "brick", "slab", "panel", "dice", "rectangle", "board", "plaque", "stamp"],
    "triangle": ["tent", "cone", "sail", "spearhead", "pennant", "delta", "fin", "gable", "prism"],
    "cross": ["crucifix", "saltire", "crossroads", "intersection", "asterisk", "ankh", "x"],
}


def held_out_words(sources: dict[str, VocabularyMap]) -> Table:
    """Each source on words of neither bench.quality's lists nor the mapping's: how far what
    the paraphrases measure holds for other words."""
    colours = [(w, c) for c, words in HELD_OUT_COLOURS.items() for w in words]
    shapes = [(w, s) for s, words in HELD_OUT_SHAPES.items() for w in words]
    rows = []
    for label, vocabulary in sources.items():
        right = []
        for cases, prompt, part in (
            (colours, "a {} square on a white background", "colour"),
            (shapes, "a red {} on a white background", "shape"),
        ):
            mappings = [vocabulary.map(prompt.format(word)) for word, _ in cases]
            right.append(
                sum(
                    m is not None and getattr(m.scene, part) == want
                    for m, (_, want) in zip(mappings, cases, strict=True)
                )
            )
        rows.append([label, f"{right[0]}/{len(colours)}", f"{right[1]}/{len(shapes)}"])
    return Table(
        "1b. Words neither list uses, by source: the figure's colour, then its shape",
        ["source:", "colour words right", "shape words right"],
        rows,
    )
