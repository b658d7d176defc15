"""A procedural world of coloured shapes, for a demo model that can be checked exactly.

``world`` renders a caption from a small grammar into a picture; ``checker`` reads a picture
back into (colour, shape, background), exactly on rendered pictures and approximately on
generated ones.
"""

from imggen.shapes.checker import Reading, read_image
from imggen.shapes.world import BACKGROUNDS, COLOURS, SHAPES, Scene, caption, render

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPES",
    "Reading",
    "Scene",
    "caption",
    "read_image",
    "render",
]
