"""Map a prompt written in other words onto the shapes world's caption grammar.

"beneath a coal-black sky, a small lemon disc" -> "a yellow circle on a black background".

1. **Figure and ground** from the clauses: the prompt is cut at commas, colons and the words
   that introduce a ground ("on", "against", "beneath"...) or a figure ("with"); a clause
   introduced by a ground word is the ground, the rest is the figure. Without such a word the
   first clause is the figure ("ruby ball, lime surface").
2. **Each part's colour and the figure's shape**, from the sources given, each best at one thing:
   - the colour-name table (``colour_names``): a named colour decides its part's colour;
   - the sentence embedder: similarity of the part's words to the world's words, each phrased
     a few ways ("the color of X", "a X thing") and averaged, which steadies it on single words;
   - the language model: the likelihood of the part's words as another word for each candidate
     ("Another word for circle is orb"), read the noisy-channel way, which spares a small model
     its bias towards some answers.
   The world's own words decide where they appear; the other sources' log-probabilities over
   the candidates are added.

Nothing here knows a synonym list: the table, the embedder and the language model are all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from imggen.shapes.colour_names import colour_mentions
from imggen.shapes.world import COLOURS, SHAPES, Scene, caption, parse_caption

Embed = Callable[[Sequence[str]], torch.Tensor]  # texts -> unit rows
# contexts, continuation -> log-likelihood of the continuation after each context
Likelihood = Callable[[Sequence[str], str], torch.Tensor]

_COLOUR_PHRASINGS = ("{}", "the color of {}", "a {} thing", "{} paint")
_SHAPE_PHRASINGS = ("a {}", "the shape of a {}", "a {} drawn on paper")
_COLOUR_CHANNEL = "A shade of {}, such as"
_SHAPE_CHANNEL = "A {0} is a shape. Another word for {0} is"
_GROUND_WORDS = r"on|against|over|upon|atop|beneath|under|below|behind|in front of"
_CLAUSES = re.compile(rf"[,;:]|\s(?=(?:{_GROUND_WORDS}|with)\s)")
_INTRODUCES_GROUND = re.compile(rf"(?:{_GROUND_WORDS})\s")
_INTRODUCES_FIGURE = re.compile(r"with\s")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
# Words that describe neither colour nor shape ("the colour of grass", "set against").
_FILLER = {"a", "an", "the", "of", "and", "in", "at", "on", "with", "small", "big", "large"}
_FILLER |= {"colour", "color", "set", "shade", "painted", "coloured", "colored"}
# How sharply embedder similarities turn into probabilities: cosines of near words differ by
# a few hundredths.
_EMBED_TEMPERATURE = 0.05
_DECIDED = 30.0  # the log-probability margin of a word the world or the table knows


@dataclass(frozen=True)
class _Guess:
    """How the embedder and the language model are asked about one part."""

    candidates: tuple[str, ...]
    phrasings: tuple[str, ...]  # the embedder's phrasings of each word
    channel: str  # the language model's context, "another word for {candidate} is"


_COLOUR_GUESS = _Guess(tuple(COLOURS), _COLOUR_PHRASINGS, _COLOUR_CHANNEL)
_SHAPE_GUESS = _Guess(tuple(SHAPES), _SHAPE_PHRASINGS, _SHAPE_CHANNEL)


@dataclass(frozen=True)
class Mapping:
    prompt: str  # a caption of the grammar
    scene: Scene
    changed: bool  # False when the prompt already was a caption
    sources: tuple[str, ...] = ()  # what decided: world words, table, embedder, language model


class VocabularyMap:
    def __init__(
        self,
        embed: Embed | None = None,
        likelihood: Likelihood | None = None,
        *,
        colour_table: bool = True,
    ) -> None:
        self._embed = embed
        self._likelihood = likelihood
        self._table = colour_table
        self._colours = self._shapes = None
        if embed is not None:
            self._colours = self._phrased(list(COLOURS), _COLOUR_PHRASINGS)
            self._shapes = self._phrased(list(SHAPES), _SHAPE_PHRASINGS)

    def map(self, prompt: str) -> Mapping | None:
        """The caption nearest to ``prompt``, or None when it names no figure and ground."""
        scene = parse_caption(prompt)
        if scene is not None:
            return Mapping(caption(scene), scene, changed=False)
        parts = figure_and_ground(prompt)
        if parts is None:
            return None
        figure, ground = parts
        sources: set[str] = set()
        colour = list(COLOURS)[int(self._colour(figure, sources).argmax())]
        shape = list(SHAPES)[int(self._shape(figure, sources).argmax())]
        # The world has no shape on a background of its own colour: the next nearest wins.
        ground_scores = self._colour(ground, sources)
        ranked = [list(COLOURS)[i] for i in ground_scores.argsort(descending=True).tolist()]
        background = next(name for name in ranked if name != colour)
        scene = Scene(colour, shape, background)
        return Mapping(caption(scene), scene, changed=True, sources=tuple(sorted(sources)))

    def _colour(self, text: str, sources: set[str]) -> torch.Tensor:
        words = _words(text)
        named = [word for word in words if word in COLOURS]
        mentions = colour_mentions(text) if self._table else []
        if mentions:
            sources.add("table")
            return _ranked(list(COLOURS), _colour_of(mentions, text))
        if named:
            sources.add("world words")
            return _ranked(list(COLOURS), named[:1])
        return self._guess(words, _COLOUR_GUESS, self._colours, sources)

    def _shape(self, text: str, sources: set[str]) -> torch.Tensor:
        words = _words(text)
        named = [word for word in words if word in SHAPES]
        if named:
            sources.add("world words")
            return _ranked(list(SHAPES), named[-1:])
        head = _without_colours(words) if self._table else words
        return self._guess(head, _SHAPE_GUESS, self._shapes, sources)

    def _guess(
        self, words: Sequence[str], guess: _Guess, anchors: torch.Tensor | None, sources: set[str]
    ) -> torch.Tensor:
        """Log-scores of the candidates from the embedder and the language model, added."""
        scores = torch.zeros(len(guess.candidates))
        if self._embed is not None and anchors is not None and words:
            sources.add("embedder")
            scores += self._embedded(_spans(words), anchors, guess.phrasings)
        if self._likelihood is not None and words:
            sources.add("language model")
            scores += self._channel(guess.channel, guess.candidates, " ".join(words))
        return scores

    def _phrased(self, words: Sequence[str], phrasings: Sequence[str]) -> torch.Tensor:
        assert self._embed is not None
        total = sum(
            self._embed([phrasing.format(word) for word in words]) for phrasing in phrasings
        )
        return torch.nn.functional.normalize(torch.as_tensor(total), dim=-1)

    def _embedded(
        self, spans: Sequence[str], anchors: torch.Tensor, phrasings: Sequence[str]
    ) -> torch.Tensor:
        """Log-probabilities of the anchors from each one's best similarity to any span."""
        if not spans:
            return torch.zeros(len(anchors))
        similarity = (self._phrased(spans, phrasings) @ anchors.T).max(dim=0).values
        return torch.log_softmax(similarity / _EMBED_TEMPERATURE, dim=0)

    def _channel(self, template: str, candidates: Sequence[str], words: str) -> torch.Tensor:
        assert self._likelihood is not None
        contexts = [template.format(candidate) for candidate in candidates]
        return torch.log_softmax(self._likelihood(contexts, f" {words}"), dim=0)


def figure_and_ground(prompt: str) -> tuple[str, str] | None:
    """The figure's words and the ground's, or None when the prompt has not two parts."""
    clauses = [c.strip() for c in _CLAUSES.split(prompt.lower()) if c and _words(c)]
    if len(clauses) < 2:
        return None
    grounds = [c for c in clauses if _INTRODUCES_GROUND.match(c)]
    figures = [c for c in clauses if _INTRODUCES_FIGURE.match(c)]
    if grounds:
        ground = grounds[0]
    elif figures:
        ground = next(c for c in clauses if c not in figures)
    else:
        ground = clauses[-1]
    figure = " ".join(c for c in clauses if c != ground)
    return figure, ground


def _colour_of(mentions: Sequence[tuple[int, list[str]]], text: str) -> list[str]:
    """The mention that modifies a word (the "black" of "black sky") before the last word's own
    ("sky"), which names the colour only when nothing else does."""
    last = len(re.findall(r"[a-z]+", text.lower())) - 1
    modifiers = [colour for index, colour in mentions if index < last]
    return (modifiers or [mentions[-1][1]])[0]


def _ranked(candidates: Sequence[str], ranking: Sequence[str]) -> torch.Tensor:
    """Log-scores that decide for ``ranking[0]``, keeping the rest of its order for ties."""
    order = {name: i for i, name in enumerate(ranking)}
    scores = [-_DECIDED * (i > 0) - i for i in (order.get(n, len(candidates)) for n in candidates)]
    return torch.tensor(scores, dtype=torch.float32)


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _FILLER]


def _without_colours(words: Sequence[str]) -> list[str]:
    """The words a colour name does not account for ("ball" of "cherry-red ball")."""
    return [word for word in words if not colour_mentions(word)]


def _spans(words: Sequence[str]) -> list[str]:
    """The words, their hyphenated parts, and neighbouring pairs."""
    spans = dict.fromkeys(words)
    for word in words:
        spans.update(dict.fromkeys(word.split("-")))
    spans.update(dict.fromkeys(" ".join(pair) for pair in zip(words, words[1:], strict=False)))
    return list(spans)
