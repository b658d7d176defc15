"""A procedural world of coloured shapes, for a demo model that can be checked exactly.

``world`` renders a caption from a small grammar into a picture; ``checker`` reads a picture
back into (colour, shape, background), exactly on rendered pictures and approximately on
generated ones. ``model`` and ``train`` build the model that draws this world; the trained one
ships in ``PRETRAINED``.
"""

import json
from pathlib import Path

from imggen.shapes.checker import Reading, adherence, read_image
from imggen.shapes.world import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Scene,
    all_scenes,
    caption,
    parse_caption,
    render,
)

PRETRAINED = Path(__file__).parent / "pretrained"
# A model folder holding this file draws the shapes world: its jobs get the adherence metric,
# and the expand stage can map other words onto the world's. It also declares the size the
# model draws (``native_size``), which a job naming no size gets.
WORLD_FILE = "imggen_world.json"


def draws_shapes(model_folder: str | Path) -> bool:
    try:
        return json.loads((Path(model_folder) / WORLD_FILE).read_text())["world"] == "shapes"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def mark_as_shapes(model_folder: str | Path, size: int) -> None:
    """Mark the folder as a model of the shapes world that draws ``size`` x ``size`` scenes."""
    description = {
        "world": "shapes",
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "native_size": [size, size],
    }
    (Path(model_folder) / WORLD_FILE).write_text(json.dumps(description, indent=2) + "\n")


__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "PRETRAINED",
    "SHAPES",
    "WORLD_FILE",
    "Reading",
    "Scene",
    "adherence",
    "all_scenes",
    "caption",
    "draws_shapes",
    "mark_as_shapes",
    "parse_caption",
    "read_image",
    "render",
]
