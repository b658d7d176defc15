"""Read a picture of the shapes world: which colour, which shape, which background.

Plain image analysis: the background is the commonest colour of the border, the shape is the
set of pixels far from it, its colour their median; the shape follows from how it fills its
bounding box and how wide its bottom row is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imggen.shapes.world import COLOURS, Scene

CHECKER_VERSION = "imggen-shapes-checker-1"  # stored with the adherence metrics
_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _NAMES], dtype=np.float64)


@dataclass(frozen=True)
class Reading:
    colour: str | None
    shape: str | None
    background: str


def _nearest(rgb: np.ndarray) -> str:
    return _NAMES[int(_nearest_all(rgb))]


def _nearest_all(pixels: np.ndarray) -> np.ndarray:
    """The nearest palette colour's index for every pixel of ``pixels`` (..., 3)."""
    return np.argmin(((pixels[..., None, :] - _PALETTE) ** 2).sum(axis=-1), axis=-1)


def read_image(image: Image.Image) -> Reading:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    # 1. Background: the palette colour most of the border is closest to.
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    votes = np.bincount(_nearest_all(border), minlength=len(_NAMES))
    background_index = int(np.argmax(votes))
    background = _NAMES[background_index]
    # 2. The shape: the largest connected patch of pixels whose nearest palette colour is not
    # the background's (a generated image may have specks and soft edges elsewhere).
    mask = _largest_patch(_nearest_all(pixels) != background_index)
    if mask.sum() < 4:
        return Reading(colour=None, shape=None, background=background)
    colour = _nearest(np.median(pixels[mask], axis=0))
    return Reading(colour=colour, shape=_shape(mask), background=background)


def _largest_patch(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask`` (a flood fill; images here are small)."""
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        patch, frontier = [], [start]
        while frontier:
            y, x = frontier.pop()
            patch.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    frontier.append((ny, nx))
        if len(patch) > len(best):
            best = patch
    result = np.zeros_like(mask)
    if best:
        result[tuple(np.array(best).T)] = True
    return result


def _shape(mask: np.ndarray) -> str:
    """Tell the shapes apart by how wide they are at a quarter and three quarters of their
    height, and how much of their bounding box they fill. These hold for crisp shapes and for
    soft-edged, round-cornered ones alike:

    ===========  =====  =====  ====
    shape        w1/4   w3/4   fill
    ===========  =====  =====  ====
    triangle     0.25   0.75   0.50
    cross        0.33   0.33   0.56
    square       1      1      1
    circle       0.87   0.87   0.79
    ===========  =====  =====  ====
    """
    rows, cols = np.nonzero(mask)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height = box.shape[0]

    def width_at(fraction: float) -> float:
        # Mean over a few rows around that height, so one ragged row does not decide.
        centre = int(round(fraction * (height - 1)))
        band = box[max(centre - 1, 0) : centre + 2]
        return float(band.mean())

    quarter, three_quarters = width_at(0.25), width_at(0.75)
    if three_quarters - quarter >= 0.25:
        return "triangle"
    if quarter < 0.6 and three_quarters < 0.6:
        return "cross"
    return "square" if box.mean() >= 0.88 else "circle"


def adherence(image: Image.Image, scene: Scene) -> dict[str, float]:
    """1.0 or 0.0 per part of ``scene`` the image shows right, and ``adherence`` for all three."""
    reading = read_image(image)
    parts = {
        "adherence_colour": float(reading.colour == scene.colour),
        "adherence_shape": float(reading.shape == scene.shape),
        "adherence_background": float(reading.background == scene.background),
    }
    return {"adherence": float(all(parts.values())), **parts}
