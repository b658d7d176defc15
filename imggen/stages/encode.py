"""Stage 2, encode: the text encoder turns a prompt into the embeddings the UNet attends to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from imggen.embeddings import PromptEmbeddings
from imggen.latent_scale import to_model

if TYPE_CHECKING:
    from imggen.components import Components

__all__ = ["PromptEmbeddings", "encode_image", "encode_prompt", "image_to_tensor"]


@torch.inference_mode()
def encode_prompt(parts: Components, prompt: str, negative_prompt: str = "") -> PromptEmbeddings:
    """Encode ``prompt`` and ``negative_prompt`` (each cut to the tokenizers' length) with the
    text encoders of the model's family."""
    return parts.family.encode_prompt(parts, prompt, negative_prompt)


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
    pixels = image_to_tensor(image, height, width).to(parts.device, parts.vae.dtype)
    latents = parts.vae.encode(pixels).latent_dist.mode()
    return to_model(parts.vae, latents).to(parts.dtype)
