"""A WordNet database of a few senses, written in WordNet's own format (``man 5 wndb``), for tests
that must not depend on the system's copy."""

from __future__ import annotations

from pathlib import Path

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by\n"
# (part of speech, topic, words, links as (symbol, index into this list), definition), each
# word's senses in the order given, the most frequent first.
SENSES: list[tuple[str, int, list[str], list[tuple[str, int]], str]] = [
    ("noun", 20, ["carrot"], [], "deep orange edible root of the cultivated carrot plant"),
    ("noun", 13, ["carrot"], [], "promise of reward; the carrot and the stick"),
    ("noun", 21, ["pearl"], [], "a smooth lustrous round structure inside the shell of a clam"),
    ("noun", 7, ["pearl", "bone", "ivory"], [], "a shade of white the color of bleached bones"),
    ("noun", 25, ["wedge"], [], "any shape that is triangular in cross section"),
    ("noun", 25, ["triangle", "trigon"], [("+", 6)], "a three-sided polygon"),
    ("adj", 0, ["triangular"], [("+", 5)], "having three angles"),
    ("noun", 6, ["tile"], [], "a flat thin rectangular slab of fired clay"),
    ("adj", 0, ["inky"], [], "of the color of black ink"),
]


def write_tiny_wordnet(folder: Path) -> Path:
    """The index and data files of nouns and adjectives for ``SENSES`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets: list[int] = []
    data = {"noun": LICENCE, "adj": LICENCE}
    pos_letter = {"noun": "n", "adj": "a"}
    # The offsets first: a line's length does not depend on them (eight digits each).
    for pos, topic, words, links, definition in SENSES:
        offsets.append(len(data[pos].encode()))
        unlinked = [(symbol, 0, "n") for symbol, _ in links]
        data[pos] += _data_line(0, topic, pos_letter[pos], words, unlinked, definition)
    data = {"noun": LICENCE, "adj": LICENCE}
    for offset, (pos, topic, words, links, definition) in zip(offsets, SENSES, strict=True):
        targets = [(symbol, offsets[i], pos_letter[SENSES[i][0]]) for symbol, i in links]
        data[pos] += _data_line(offset, topic, pos_letter[pos], words, targets, definition)
    index: dict[str, dict[str, list[int]]] = {"noun": {}, "adj": {}}
    for offset, (pos, _, words, _, _) in zip(offsets, SENSES, strict=True):
        for word in words:
            index[pos].setdefault(word, []).append(offset)
    for pos in ("noun", "adj"):
        (folder / f"data.{pos}").write_text(data[pos])
        entries = "".join(
            f"{lemma} {pos_letter[pos]} {len(found)} 0 {len(found)} 0 "
            + " ".join(f"{offset:08d}" for offset in found)
            + "  \n"
            for lemma, found in sorted(index[pos].items())
        )
        (folder / f"index.{pos}").write_text(LICENCE + entries)
    return folder


def _data_line(
    offset: int,
    topic: int,
    pos: str,
    words: list[str],
    links: list[tuple[str, int, str]],
    definition: str,
) -> str:
    named = " ".join(f"{word} 0" for word in words)
    pointers = "".join(f" {symbol} {target:08d} {p} 0000" for symbol, target, p in links)
    return (
        f"{offset:08d} {topic:02d} {pos} {len(words):02x} {named} {len(links):03d}{pointers}"
        f" | {definition}  \n"
    )
