"""A1111's extra-networks syntax: LoRA named in the prompt as ``<lora:NAME>`` or
``<lora:NAME:WEIGHT>``, taken out of it as A1111 does."""

from __future__ import annotations

import re
from typing import Any

LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?>")


def lora_tags(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """The prompt without its ``<lora:…>`` tags, and the adapters they name (weight 1 unless
    given). Raises ValueError for a weight that is not a number."""
    loras = []
    for name, weight in LORA_TAG.findall(prompt):
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"<lora:{name}:{weight}>: not a weight") from None
        loras.append({"name": name.strip(), "weight": value})
    return " ".join(LORA_TAG.sub(" ", prompt).split()), loras
