"""Reading a batch's rows from a file or a request body: each row a job's fields, with its line.

``.txt``: a prompt a line. ``.csv``, ``.tsv``: a header; the ``prompt`` column, else the first,
is the prompt, and other columns that are job fields are used (PartiPrompts.tsv loads as it
is). ``.jsonl``: any job field per row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.errors import ImggenError
from producer.spec import JobSpec

SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


class InvalidRows(ImggenError):
    """Rows that cannot be submitted, each by line and field; nothing was written."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid rows: {shown}{more}")


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a ``.txt`` (a prompt a line), ``.csv`` or ``.tsv`` (a header; a ``prompt``
    column, else the first column is the prompt; other columns that are job fields are used),
    or ``.jsonl`` file (any job field per row), each with its line number."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidRows([RowError(0, "file", f"must end in one of {', '.join(SUFFIXES)}")])
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        return [
            (i, {"prompt": line}) for i, line in enumerate(text.splitlines(), 1) if line.strip()
        ]
    if suffix == ".jsonl":
        return read_json_lines(text)
    return list(_table_rows(text, "\t" if suffix == ".tsv" else ","))


def read_json_lines(text: str) -> list[tuple[int, dict[str, Any]]]:
    """JSON lines as rows, each with its line number; raises InvalidRows naming a bad line."""
    return list(_json_lines(text))


def _json_lines(text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidRows([RowError(number, "row", f"not JSON: {exc}")]) from None
        if not isinstance(row, dict):
            raise InvalidRows([RowError(number, "row", "must be a JSON object")])
        yield number, row


def _table_rows(text: str, delimiter: str) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    if not header:
        return
    lower = [name.lower() for name in header]
    prompt_at = lower.index("prompt") if "prompt" in lower else 0
    fields = set(JobSpec.model_fields) - {"has_input_image", "prompt"}
    for number, cells in enumerate(reader, 2):
        if not any(cell.strip() for cell in cells):
            continue
        row: dict[str, Any] = {"prompt": cells[prompt_at] if prompt_at < len(cells) else ""}
        for name, cell in zip(lower, cells, strict=False):
            if name in fields and cell.strip():
                row[name] = _cell(cell.strip())
        yield number, row


def _cell(text: str) -> Any:
    """A table cell as JSON where it reads as JSON (numbers, booleans), else as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
