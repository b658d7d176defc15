"""Stage 1, expand: turn the user's prompt into the prompt the model is given.

For now a pass-through that normalises whitespace; a language-model expander plugs in here.
"""

from __future__ import annotations

from dataclasses import dataclass

from imggen.errors import InvalidInput


@dataclass(frozen=True)
class Expansion:
    original: str
    prompt: str
    expanded: bool


def expand(prompt: str) -> Expansion:
    """Return the prompt to encode. Raises InvalidInput for an empty prompt."""
    cleaned = " ".join(prompt.split())
    if not cleaned:
        raise InvalidInput("prompt: must not be empty")
    return Expansion(original=prompt, prompt=cleaned, expanded=False)
