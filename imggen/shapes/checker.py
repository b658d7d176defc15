"""Read a picture of the shapes world: which colour, which shape, which background.

Plain image analysis: the background is the commonest colour of the border, the shape is the
set of pixels far from it, its colour their median; the shape follows from how it fills its
bounding box and how wide its bottom row is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imggen.shapes.world import COLOURS

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _NAMES], dtype=np.float64)


@dataclass(frozen=True)
class Reading:
    colour: str | None
    shape: str | None
    background: str


def _nearest(rgb: np.ndarray) -> str:
    return _NAMES[int(np.argmin(((_PALETTE - rgb) ** 2).sum(axis=1)))]


def read_image(image: Image.Image) -> Reading:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    # 1. Background: the palette colour most of the border is closest to.
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    votes = [_nearest(p) for p in border]
    background = max(set(votes), key=votes.count)
    # 2. The shape: pixels whose nearest palette colour is not the background's.
    labels = np.array([[_nearest(p) for p in row] for row in pixels])
    mask = labels != background
    if mask.sum() < 4:
        return Reading(colour=None, shape=None, background=background)
    colour = _nearest(np.median(pixels[mask], axis=0))
    return Reading(colour=colour, shape=_shape(mask), background=background)


def _shape(mask: np.ndarray) -> str:
    rows, cols = np.nonzero(mask)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    fill = box.mean()
    bottom, top = box[-1].mean(), box[0].mean()
    if fill >= 0.9:
        return "square"
    if bottom >= 0.7 and top < 0.5:
        return "triangle"
    if fill >= 0.66:
        return "circle"
    return "cross"
