"""Map a prompt written in other words onto the shapes world's caption grammar.

"a cherry-red ball on a cloud-white field" -> "a red circle on a white background". The prompt
is split into the figure and the ground (at "on", "against", "over", a comma…); every word of
each part, and every pair of neighbouring words, is compared with the world's colour and shape
words by a sentence embedder, and the nearest ones win. The comparison uses a few phrasings of
each word ("the color of X", "a X thing") averaged, which steadies the embedder on single
words. Nothing here knows any synonym: the embedder's sense of words is all there is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from imggen.shapes.world import COLOURS, SHAPES, Scene, caption, parse_caption

Embed = Callable[[Sequence[str]], torch.Tensor]  # texts -> unit rows

_COLOUR_PHRASINGS = ("{}", "the color of {}", "a {} thing", "{} paint")
_SHAPE_PHRASINGS = ("a {}", "the shape of a {}", "a {} drawn on paper")
_SPLIT = re.compile(r",|;|\s(?:on|against|over|upon|in front of|with)\s")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_FILLER = {"a", "an", "the", "of", "and", "in", "at"}


@dataclass(frozen=True)
class Mapping:
    prompt: str  # a caption of the grammar
    scene: Scene
    changed: bool  # False when the prompt already was a caption


class VocabularyMap:
    def __init__(self, embed: Embed) -> None:
        self._embed = embed
        self._colours = self._phrased(list(COLOURS), _COLOUR_PHRASINGS)
        self._shapes = self._phrased(list(SHAPES), _SHAPE_PHRASINGS)

    def _phrased(self, words: Sequence[str], phrasings: Sequence[str]) -> torch.Tensor:
        total = sum(
            self._embed([phrasing.format(word) for word in words]) for phrasing in phrasings
        )
        return torch.nn.functional.normalize(torch.as_tensor(total), dim=-1)

    def map(self, prompt: str) -> Mapping | None:
        """The caption nearest to ``prompt``, or None when it names no figure and ground."""
        scene = parse_caption(prompt)
        if scene is not None:
            return Mapping(caption(scene), scene, changed=False)
        parts = _SPLIT.split(prompt.lower(), maxsplit=1)
        if len(parts) != 2:
            return None
        figure, ground = (_spans(part) for part in parts)
        if not figure or not ground:
            return None
        colour_scores = self._best(figure, self._colours, _COLOUR_PHRASINGS)
        colour = list(COLOURS)[int(colour_scores.argmax())]
        shape = list(SHAPES)[int(self._best(figure, self._shapes, _SHAPE_PHRASINGS).argmax())]
        ground_scores = self._best(ground, self._colours, _COLOUR_PHRASINGS)
        # The world has no shape on a background of its own colour: the next nearest wins.
        ranked = [list(COLOURS)[i] for i in ground_scores.argsort(descending=True).tolist()]
        background = next(name for name in ranked if name != colour)
        scene = Scene(colour, shape, background)
        return Mapping(caption(scene), scene, changed=True)

    def _best(
        self, spans: Sequence[str], anchors: torch.Tensor, phrasings: Sequence[str]
    ) -> torch.Tensor:
        """For each anchor word, its best similarity to any of ``spans``."""
        return (self._phrased(spans, phrasings) @ anchors.T).max(dim=0).values


def _spans(text: str) -> list[str]:
    """The words of ``text`` without fillers, their hyphenated parts, and neighbouring pairs."""
    words = [word for word in _WORD.findall(text) if word not in _FILLER]
    spans = dict.fromkeys(words)
    for word in words:
        spans.update(dict.fromkeys(word.split("-")))
    spans.update(dict.fromkeys(" ".join(pair) for pair in zip(words, words[1:], strict=False)))
    return list(spans)
