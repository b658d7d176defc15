"""Scenes: one coloured shape on a plain background, and the caption that describes it."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
BACKGROUNDS = COLOURS
SHAPES = ("circle", "square", "triangle", "cross")


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        if (
            self.colour not in COLOURS
            or self.background not in BACKGROUNDS
            or self.shape not in SHAPES
        ):
            raise ValueError(f"not a scene of this world: {self}")
        if self.colour == self.background:
            raise ValueError("the shape and the background must differ in colour")


def caption(scene: Scene) -> str:
    return f"a {scene.colour} {scene.shape} on a {scene.background} background"


# What ``imggen demo`` draws (its first four by default): scenes of the shapes world, the second,
# third, fourth and sixth in other words, which the expand stage maps onto the model's own. The
# third's shape needs the language model; the fourth's colour WordNet, where it is installed.
DEMO_PROMPTS = [
    "a yellow triangle on a black background",
    "beneath a coal-black sky, a small lemon disc",
    "an amethyst arrowhead against a snow canvas",
    "a carrot pyramid on a navy wall",
    "a blue square on a yellow background",
    "a cherry-red ball on a cloud-white field",
    "a green cross on a purple background",
]

_CAPTION = re.compile(r"an? (\w+) (\w+) on an? (\w+) background")


def parse_caption(text: str) -> Scene | None:
    """The scene a caption of the grammar describes, or None for any other text."""
    match = _CAPTION.fullmatch(" ".join(text.lower().split()).rstrip("."))
    if match is None:
        return None
    try:
        return Scene(colour=match[1], shape=match[2], background=match[3])
    except ValueError:
        return None


def all_scenes() -> list[Scene]:
    return [
        Scene(colour, shape, background)
        for colour in COLOURS
        for shape in SHAPES
        for background in BACKGROUNDS
        if colour != background
    ]


def render(scene: Scene, size: int = 32, rng: random.Random | None = None) -> Image.Image:
    """Draw ``scene`` (crisp, no anti-aliasing) at a random size and place within the frame."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    side = rng.randint(size * 3 // 8, size * 3 // 4)
    left, top = rng.randint(1, size - side - 1), rng.randint(1, size - side - 1)
    right, bottom = left + side - 1, top + side - 1
    fill = COLOURS[scene.colour]
    if scene.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif scene.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    else:  # cross: a plus sign whose arms are a third of its side
        third = side / 3
        draw.rectangle((left + third, top, right - third, bottom), fill=fill)
        draw.rectangle((left, top + third, right, bottom - third), fill=fill)
    return image
