"""Colour words through a maintained colour-name table: name -> RGB -> the nearest world colour.

The table is matplotlib's: the 949 names of the XKCD colour survey ("cherry red", "mustard",
"grass") and the 148 CSS4 names ("tomato", "ivory"). "Nearest" is perceptual: in CIE LCh, a
colour of little chroma is white or black by its lightness, any other takes the world colour of
the nearest hue (lightness matters little: navy is a dark blue, not a black).
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
_GREY_CHROMA = 18.0
_PALE = (90.0, 35.0)  # lightness at least, chroma under
_BLACK = 5.0


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


def nearest_world_colour(rgb: Sequence[float]) -> str:
    lightness, chroma, hue = lch(rgb)
    pale = lightness >= _PALE[0] and chroma < _PALE[1]
    if chroma < _GREY_CHROMA or pale or lightness < _BLACK:
        return "white" if lightness > 50 else "black"

    def distance(name: str) -> float:
        gap = abs(hue - _WORLD_HUES[name])
        return min(gap, 360 - gap)

    return min(_CHROMATIC, key=distance)


_WORLD_HUES = {name: lch(COLOURS[name])[2] for name in _CHROMATIC}


def ranked_world_colours(rgb: Sequence[float]) -> list[str]:
    """The world's colours, the nearest first, then the rest by distance in CIE Lab."""

    def lab(colour: Sequence[float]) -> tuple[float, float, float]:
        lightness, chroma, hue = lch(colour)
        return lightness, chroma * math.cos(math.radians(hue)), chroma * math.sin(math.radians(hue))

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
    words = _WORD.findall(text.lower().replace("grey", "gray"))
    table = colour_table()
    found: list[tuple[int, list[str]]] = []
    taken: set[int] = set()
    for length in (3, 2, 1):
        for start in range(len(words) - length + 1):
            span = range(start, start + length)
            name = " ".join(words[start : start + length])
            if name in table and not taken.intersection(span):
                found.append((span[-1], ranked_world_colours(table[name])))
                taken.update(span)
    return sorted(found)
