"""Stage 2, encode: the text encoder turns a prompt into the embeddings the UNet attends to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from imggen.components import Components


@dataclass
class PromptEmbeddings:
    """``cond`` for the prompt and ``uncond`` for the negative prompt, each ``[1, tokens, dim]``;
    ``pooled`` (``[1, dim]``) sums the prompt up, for comparing prompts (the semantic cache)."""

    cond: torch.Tensor
    uncond: torch.Tensor
    pooled: torch.Tensor | None = None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"cond": self.cond.contiguous(), "uncond": self.uncond.contiguous()}
        if self.pooled is not None:
            tensors["pooled"] = self.pooled.contiguous()
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PromptEmbeddings:
        return cls(cond=tensors["cond"], uncond=tensors["uncond"], pooled=tensors.get("pooled"))


@torch.inference_mode()
def encode_prompt(parts: Components, prompt: str, negative_prompt: str = "") -> PromptEmbeddings:
    """Encode ``prompt`` and ``negative_prompt`` (truncated to the tokenizer's length)."""
    # 1. Tokenize both prompts to the encoder's full length, as Stable Diffusion was trained.
    tokens = parts.tokenizer(
        [negative_prompt, prompt],
        padding="max_length",
        max_length=parts.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    # 2. Encode both in one batch; the last hidden state is what the UNet cross-attends to.
    output = parts.text_encoder(tokens.input_ids.to(parts.device))
    hidden, pooled = output[0], output[1]
    return PromptEmbeddings(
        cond=hidden[1:2].to(parts.dtype),
        uncond=hidden[0:1].to(parts.dtype),
        pooled=pooled[1:2].float(),
    )


def image_to_tensor(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """An RGB image resized to ``width`` x ``height`` as a ``[1, 3, h, w]`` tensor in [-1, 1]."""
    resized = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0)
    return array.permute(2, 0, 1).unsqueeze(0)


@torch.inference_mode()
def encode_image(parts: Components, image: Image.Image, height: int, width: int) -> torch.Tensor:
    """The VAE latents of ``image`` at the job's size, ``[1, C, h, w]``, for image-to-image.

    Uses the mode of the VAE's latent distribution, so the same image always encodes the same.
    """
    pixels = image_to_tensor(image, height, width).to(parts.device, parts.dtype)
    latents = parts.vae.encode(pixels).latent_dist.mode()
    return latents * parts.vae.config.scaling_factor
