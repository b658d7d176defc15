"""Stable Diffusion 1.x and 2.x: one CLIP text encoder whose last hidden state the UNet attends
to; nothing else conditions the UNet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch
from diffusers import StableDiffusionPipeline

from imggen.embeddings import PromptEmbeddings
from imggen.errors import UnsupportedModel
from imggen.families.base import Config, Family, TextEncoder, tokenize

if TYPE_CHECKING:
    from imggen.components import Components


class StableDiffusion(Family):
    name: ClassVar[str] = "sd"
    pipelines: ClassVar[frozenset[str]] = frozenset(
        {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"}
    )
    text_encoders: ClassVar[tuple[TextEncoder, ...]] = (
        TextEncoder("tokenizer", "text_encoder", "CLIPTextModel"),
    )

    def check(self, configs: Mapping[str, Config], index: Config) -> None:
        added = configs["unet"].get("addition_embed_type")
        if added is not None:
            raise UnsupportedModel(
                f"model: the UNet takes added conditioning ({added}), which a "
                f"{index.get('_class_name')} folder does not give it"
            )
        super().check(configs, index)

    def pipeline(self, parts: Components) -> StableDiffusionPipeline:
        return StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=parts.unet,
            scheduler=parts.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.inference_mode()
    def encode_prompt(self, parts: Components, prompt: str, negative: str) -> PromptEmbeddings:
        # Both prompts in one batch; the last hidden state is what the UNet cross-attends to.
        output = parts.text_encoder(tokenize(parts.tokenizer, [negative, prompt], parts.device))
        hidden, pooled = output[0], output[1]
        return PromptEmbeddings(
            cond=hidden[1:2].to(parts.dtype),
            uncond=hidden[0:1].to(parts.dtype),
            pooled=pooled[1:2].float(),
        )
