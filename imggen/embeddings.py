"""A prompt's embeddings as the encode stage hands them to denoise (and the caches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptEmbeddings:
    """``cond`` for the prompt and ``uncond`` for the negative prompt, each ``[1, tokens, dim]``;
    ``pooled`` (``[1, dim]``) sums the prompt up, for comparing prompts (the semantic cache).
    ``cond_pooled`` and ``uncond_pooled`` (SDXL) are the pooled embeddings the UNet itself is
    conditioned on."""

    cond: torch.Tensor
    uncond: torch.Tensor
    pooled: torch.Tensor | None = None
    cond_pooled: torch.Tensor | None = None
    uncond_pooled: torch.Tensor | None = None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            name: value.contiguous()
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor)
        }
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PromptEmbeddings:
        return cls(**tensors)
