"""Stage 4, decode: the VAE turns latents into images."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from imggen.components import Components
from imggen.latent_scale import to_vae


@torch.inference_mode()
def decode(parts: Components, latents: torch.Tensor) -> list[Image.Image]:
    """Decode ``[n, C, h, w]`` latents to ``n`` RGB images."""
    # 1. Undo the latent scaling the VAE was trained with, then decode (in the VAE's own dtype:
    # fp32 where the family's VAE overflows in fp16).
    latents = latents.to(parts.device, parts.vae.dtype)
    pixels = parts.vae.decode(to_vae(parts.vae, latents)).sample
    # 2. [-1, 1] floats to 8-bit RGB.
    pixels = (pixels.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.round(p * 255).astype(np.uint8)) for p in pixels]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
