"""Map a prompt written in other words onto the shapes world's caption grammar.

"beneath a coal-black sky, a small lemon disc" -> "a yellow circle on a black background".

1. **Figure and ground** from the clauses: the prompt is cut at commas, colons and the words
   that introduce a ground ("on", "against", "beneath"...) or a figure ("with"); a clause
   introduced by a ground word is the ground, the rest is the figure. Without such a word the
   first clause is the figure ("ruby ball, lime surface").
2. **Each part's colour and the figure's shape**, from the sources given, each best at one thing:
   - the colour-name table (``colour_names``): a named colour decides its part's colour;
   - the dictionary (``dictionary``, WordNet) for the words the table does not name: a
     definition that states a colour in the world's terms ("carrot": "deep orange edible
     root"), or names one of the world's shapes or an adjective WordNet derives from one
     ("wedge": "any shape that is triangular in cross section"), decides, the more frequent
     senses counting more;
   - the sentence embedder: similarity of the part's words to the world's words, each phrased
     a few ways ("the color of X", "a X thing") and averaged, which steadies it on single words;
   - the language model: the likelihood of the part's words as another word for each candidate
     ("Another word for circle is orb"), read the noisy-channel way, which spares a small model
     its bias towards some answers.
   The world's own words decide where they appear; the other sources' log-probabilities over
   the candidates are added.

Nothing here knows a synonym list: the table, the dictionary, the embedder and the language
model are all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from imggen.shapes.colour_names import colour_mentions, colour_spans, lab
from imggen.shapes.dictionary import NOUN_SHAPE, Dictionary
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
# How many of a word's most frequent senses the dictionary reads, as a noun and as an adjective:
# "pearl" is a colour in its second.
_SENSES = {"colour": 3, "shape": 2}


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
        dictionary: Dictionary | None = None,
    ) -> None:
        self._embed = embed
        self._likelihood = likelihood
        self._table = colour_table
        self._dictionary = dictionary
        # The words that name each shape in a definition: "triangle", "triangles", "triangular".
        self._shape_words = {
            shape: {shape, f"{shape}s"}
            | (dictionary.derived_adjectives(shape, NOUN_SHAPE) if dictionary else set())
            for shape in SHAPES
        }
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
        spans = colour_spans(text) if self._table else []
        mentions = [(span[-1], ranking, "table") for span, ranking in spans]
        mentions += self._defined_colours(text, {i for span, _ in spans for i in span})
        if mentions:
            ranking, source = _colour_of(sorted(mentions), text)
            sources.add(source)
            return _ranked(list(COLOURS), ranking)
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
        head = [word for word in words if not self._names_colour(word)]
        defined = self._defined_shape(head)
        if defined:
            sources.add("dictionary")
            return _ranked(list(SHAPES), defined)
        return self._guess(head, _SHAPE_GUESS, self._shapes, sources)

    def _defined_colours(self, text: str, named: set[int]) -> list[tuple[int, list[str], str]]:
        """(index, the world's colours nearest first, "dictionary") of each word the table
        does not name whose definitions state a colour in the world's colour terms: "deep
        orange", "whitish"; not "fired clay", which the table would read as a colour."""
        if self._dictionary is None:
            return []
        found = []
        for index, word in enumerate(re.findall(r"[a-z]+", text.lower())):
            if index in named or word in _FILLER:
                continue
            votes: dict[str, float] = {}
            for sense in self._dictionary.senses(word, most=_SENSES["colour"]):
                stated = _colour_terms(sense.definition)
                if stated:
                    votes[stated[0]] = votes.get(stated[0], 0.0) + 1 / (1 + sense.rank)
            if votes:
                colour = max(votes, key=votes.__getitem__)
                found.append((index, _nearest_first(colour), "dictionary"))
        return found

    def _defined_shape(self, words: Sequence[str]) -> list[str]:
        """The world's shapes that the words' definitions name, the most voted first."""
        if self._dictionary is None:
            return []
        votes = dict.fromkeys(SHAPES, 0.0)
        for word in words:
            for sense in self._dictionary.senses(word, most=_SENSES["shape"]):
                for token in _WORD.findall(sense.definition.lower()):
                    for shape, names in self._shape_words.items():
                        votes[shape] += (token in names) / (1 + sense.rank)
        if not any(votes.values()):
            return []
        return sorted(SHAPES, key=lambda shape: -votes[shape])

    def _names_colour(self, word: str) -> bool:
        """Whether ``word`` is a colour name of the table or a word the dictionary gives a
        colour ("ball" of "cherry-red ball" is not; "carrot" of "carrot wedge" is)."""
        return bool((self._table and colour_mentions(word)) or self._defined_colours(word, set()))

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


def _colour_of(mentions: Sequence[tuple[int, list[str], str]], text: str) -> tuple[list[str], str]:
    """The mention that modifies a word (the "black" of "black sky") before the last word's own
    ("sky"), which names the colour only when nothing else does; and its source. Among
    modifiers the table's names come first: "dark" is defined as "shadowed or black", but a
    "dark tangerine" is orange."""
    last = len(re.findall(r"[a-z]+", text.lower())) - 1
    modifiers = [
        (source != "table", index, colour, source)
        for index, colour, source in mentions
        if index < last
    ]
    if modifiers:
        return min(modifiers)[2:]
    return mentions[-1][1], mentions[-1][2]


def _ranked(candidates: Sequence[str], ranking: Sequence[str]) -> torch.Tensor:
    """Log-scores that decide for ``ranking[0]``, keeping the rest of its order for ties."""
    order = {name: i for i, name in enumerate(ranking)}
    scores = [-_DECIDED * (i > 0) - i for i in (order.get(n, len(candidates)) for n in candidates)]
    return torch.tensor(scores, dtype=torch.float32)


def _colour_terms(text: str) -> list[str]:
    """The world's colours that ``text`` names by their own words or their "-ish" forms
    ("reddish", "whitish")."""
    terms = []
    for word in re.findall(r"[a-z]+", text.lower()):
        stem = word.removesuffix("ish")
        forms = (word,) if stem == word else (stem, stem + "e", stem[:-1])
        terms += [form for form in forms if form in COLOURS][:1]
    return terms


def _nearest_first(colour: str) -> list[str]:
    """The world's colours, ``colour`` first and the rest by their distance from it."""
    return sorted(COLOURS, key=lambda name: math.dist(lab(COLOURS[name]), lab(COLOURS[colour])))


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _FILLER]


def _spans(words: Sequence[str]) -> list[str]:
    """The words, their hyphenated parts, and neighbouring pairs."""
    spans = dict.fromkeys(words)
    for word in words:
        spans.update(dict.fromkeys(word.split("-")))
    spans.update(dict.fromkeys(" ".join(pair) for pair in zip(words, words[1:], strict=False)))
    return list(spans)
