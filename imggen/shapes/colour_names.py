"""Colour words through a maintained colour-name table: name -> RGB -> the nearest world colour.

The table is matplotlib's: the 949 names of the XKCD colour survey ("cherry red", "mustard",
"grass") and the 148 CSS4 names ("tomato", "ivory"). "Nearest" follows how people name colours:
a colour of little chroma is white or black by its lightness (CIE LCh); any other takes the world
colour that most of its nearest neighbours in CIE Lab carry, among the table's own names whose
last word is a world colour ("navy blue", "pastel purple", "darkgreen"). The survey's answers
draw the borders between hues better than distances to the world's eight RGB values do: lilac
is a light purple to the people who named it, though its hue is nearer the world's blue.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

from imggen.shapes.world import COLOURS

_CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple")
# Below this chroma a colour reads as grey: white or black by lightness. Pale tints (ivory,
# cream) read as white, and what is darker than a lightness of 5 (midnight) as black.
_GREY_CHROMA = 14.0
_PALE = (90.0, 35.0)  # lightness at least, chroma under
_BLACK = 5.0
# A name with another colour term in it ("blue green", "pink purple", CSS4's "yellowgreen")
# names a mixture, not an example of its last word; "pinkish purple" is a purple.
_OTHER_TERMS = {*_CHROMATIC, "pink", "brown", "grey", "gray", "white", "black", "violet"}
_OTHER_TERMS |= {"teal", "turquoise", "magenta", "aqua", "cyan", "lavender", "olive", "maroon"}
_OTHER_TERMS |= {"tan", "beige", "slate"}
_NEIGHBOURS = 7


def lch(rgb: Sequence[float]) -> tuple[float, float, float]:
    """sRGB (0-255) to CIE LCh (D65): lightness, chroma, hue in degrees."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    fx, fy, fz = f(x), f(y), f(z)
    a, b_ = 500 * (fx - fy), 200 * (fy - fz)
    return 116 * fy - 16, math.hypot(a, b_), math.degrees(math.atan2(b_, a)) % 360


def lab(rgb: Sequence[float]) -> tuple[float, float, float]:
    lightness, chroma, hue = lch(rgb)
    return lightness, chroma * math.cos(math.radians(hue)), chroma * math.sin(math.radians(hue))


def nearest_world_colour(rgb: Sequence[float]) -> str:
    lightness, chroma, _ = lch(rgb)
    pale = lightness >= _PALE[0] and chroma < _PALE[1]
    if chroma < _GREY_CHROMA or pale or lightness < _BLACK:
        return "white" if lightness > 50 else "black"
    return vote(lab(rgb), examples())


def vote(
    target: tuple[float, float, float], named: Sequence[tuple[tuple[float, float, float], str]]
) -> str:
    """The world colour of most of the nearest named points, the nearer counting more."""
    nearest = sorted((math.dist(target, point), name) for point, name in named)
    votes: dict[str, float] = {}
    for distance, name in nearest[:_NEIGHBOURS]:
        votes[name] = votes.get(name, 0.0) + 1 / (distance + 1e-3)
    return max(votes, key=votes.__getitem__)


@lru_cache(maxsize=1)
def examples() -> list[tuple[tuple[float, float, float], str]]:
    """(Lab, world colour) of the table's names that are examples of a chromatic world colour."""
    named = []
    for name, rgb in colour_table().items():
        words = name.split()
        world = next((c for c in _CHROMATIC if words[-1].endswith(c)), None)
        if world is None:
            continue
        # CSS4 runs its words together ("darkgreen", "yellowgreen").
        run_together = words[-1].removesuffix(world)
        mixture = _OTHER_TERMS.intersection(words[:-1]) or any(
            term in run_together for term in _OTHER_TERMS
        )
        if not mixture:
            named.append((lab(rgb), world))
    return named


def ranked_world_colours(rgb: Sequence[float]) -> list[str]:
    """The world's colours, the nearest first, then the rest by distance in CIE Lab."""
    nearest, target = nearest_world_colour(rgb), lab(rgb)
    others = sorted(
        (name for name in COLOURS if name != nearest),
        key=lambda name: math.dist(lab(COLOURS[name]), target),
    )
    return [nearest, *others]


@lru_cache(maxsize=1)
def colour_table() -> dict[str, tuple[int, int, int]]:
    """Colour name (lower case, words separated by one space) -> RGB."""
    from matplotlib.colors import CSS4_COLORS, XKCD_COLORS, to_rgb

    named = {name: value for name, value in CSS4_COLORS.items()}
    named.update({name.removeprefix("xkcd:"): value for name, value in XKCD_COLORS.items()})
    return {
        " ".join(name.replace("-", " ").split()): tuple(round(c * 255) for c in to_rgb(value))  # type: ignore[misc]
        for name, value in named.items()
    }


_WORD = re.compile(r"[a-z]+")


def colour_mentions(text: str) -> list[tuple[int, list[str]]]:
    """The colour names in ``text``, each as (index of its last word, the world's colours
    nearest first), longest names first where they overlap: "cherry red" is one mention, not
    "cherry" and "red"."""
    return [(span[-1], ranking) for span, ranking in colour_spans(text)]


def colour_spans(text: str) -> list[tuple[range, list[str]]]:
    """The colour names in ``text`` as ``colour_mentions`` finds them, each with the indices
    of all its words."""
    words = _WORD.findall(text.lower().replace("grey", "gray"))
    table = colour_table()
    found: list[tuple[range, list[str]]] = []
    taken: set[int] = set()
    for length in (3, 2, 1):
        for start in range(len(words) - length + 1):
            span = range(start, start + length)
            name = " ".join(words[start : start + length])
            if length == 1:
                name = _named(name, table) or name
            if name in table and not taken.intersection(span):
                found.append((span, ranked_world_colours(table[name])))
                taken.update(span)
    return sorted(found, key=lambda mention: mention[0].start)


def _named(word: str, table: dict[str, tuple[int, int, int]]) -> str | None:
    """The table's name for ``word`` or for the word it is made from: "leafy" is the colour of
    "leaf", "reddish" of "red", "rosy" of "rose"."""
    if word in table:
        return word
    for suffix in ("ish", "y"):
        stem = word.removesuffix(suffix)
        if stem == word or len(stem) < 3:
            continue
        doubled = stem[:-1] if stem[-1] == stem[-2] else None  # "reddish"
        for name in (stem, stem + "e", doubled):
            if name in table:
                return name
    return None
