"""Stable Diffusion XL: two CLIP text encoders, their penultimate hidden states side by side,
and the second one's pooled embedding with the size and crop ("time ids") as added conditioning,
as diffusers' StableDiffusionXLPipeline builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from diffusers import StableDiffusionXLPipeline

from imggen.embeddings import PromptEmbeddings
from imggen.errors import UnsupportedModel
from imggen.families.base import Config, Family, TextEncoder, tokenize

if TYPE_CHECKING:
    from imggen.components import Components

# original size (h, w), crop's top left (y, x), target size (h, w)
_TIME_IDS = 6


class StableDiffusionXL(Family):
    name: ClassVar[str] = "sdxl"
    pipelines: ClassVar[frozenset[str]] = frozenset(
        {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"}
    )
    text_encoders: ClassVar[tuple[TextEncoder, ...]] = (
        TextEncoder("tokenizer", "text_encoder", "CLIPTextModel"),
        TextEncoder("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection"),
    )
    upcast_vae: ClassVar[bool] = True

    def check(self, configs: Mapping[str, Config], index: Config) -> None:
        if index.get("requires_aesthetics_score"):
            raise UnsupportedModel(
                "model: an SDXL refiner (requires_aesthetics_score), which imggen does not run"
            )
        unet = configs["unet"]
        if unet.get("addition_embed_type") != "text_time":
            raise UnsupportedModel(
                f"model: an SDXL UNet takes text_time added conditioning, this one takes "
                f"{unet.get('addition_embed_type')!r}"
            )
        super().check(configs, index)
        expected = _TIME_IDS * unet.get("addition_time_embed_dim", 0) + configs[
            "text_encoder_2"
        ].get("projection_dim", 0)
        if unet.get("projection_class_embeddings_input_dim") != expected:
            raise UnsupportedModel(
                f"model: the UNet's added conditioning takes "
                f"{unet.get('projection_class_embeddings_input_dim')} features, the size "
                f"conditioning and text_encoder_2 give {expected}"
            )

    def pipeline(self, parts: Components) -> StableDiffusionXLPipeline:
        return StableDiffusionXLPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            text_encoder_2=parts.text_encoder_2,
            tokenizer=parts.tokenizer,
            tokenizer_2=parts.tokenizer_2,
            unet=parts.unet,
            scheduler=parts.scheduler,
            add_watermarker=False,
        )

    @torch.inference_mode()
    def encode_prompt(self, parts: Components, prompt: str, negative: str) -> PromptEmbeddings:
        assert parts.tokenizer_2 is not None and parts.text_encoder_2 is not None
        # Without a negative prompt SDXL's unconditional half is zeros (the pipeline's
        # force_zeros_for_empty_prompt, on for the base models).
        zero_uncond = not negative and parts.pipeline_config.get(
            "force_zeros_for_empty_prompt", True
        )
        texts = [prompt] if zero_uncond else [negative, prompt]
        hidden: list[torch.Tensor] = []
        pooled = torch.empty(0)
        for tokenizer, encoder in (
            (parts.tokenizer, parts.text_encoder),
            (parts.tokenizer_2, parts.text_encoder_2),
        ):
            output = encoder(tokenize(tokenizer, texts, parts.device), output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
            if output[0].ndim == 2:  # the projected, pooled output of the second encoder
                pooled = output[0]
        states = torch.cat(hidden, dim=-1).to(parts.dtype)
        pooled = pooled.to(parts.dtype)
        cond, cond_pooled = states[-1:], pooled[-1:]
        if zero_uncond:
            uncond, uncond_pooled = torch.zeros_like(cond), torch.zeros_like(cond_pooled)
        else:
            uncond, uncond_pooled = states[:1], pooled[:1]
        return PromptEmbeddings(
            cond=cond,
            uncond=uncond,
            pooled=cond_pooled.float().clone(),  # a tensor of its own: stored beside the other
            cond_pooled=cond_pooled,
            uncond_pooled=uncond_pooled,
        )

    def added_conditioning(
        self,
        parts: Components,
        embeddings: Sequence[PromptEmbeddings],
        height: int,
        width: int,
        guided: bool,
    ) -> dict[str, torch.Tensor]:
        def pooled(which: str) -> torch.Tensor:
            rows = [getattr(e, which) for e in embeddings]
            if any(row is None for row in rows):
                raise UnsupportedModel("embeddings: made by a model of another family")
            return torch.cat(rows)

        text_embeds = pooled("cond_pooled")
        if guided:
            text_embeds = torch.cat([pooled("uncond_pooled"), text_embeds])
        # Drawn at the size asked for, uncropped: the conditioning SDXL was trained to read as
        # "a whole picture of this size".
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=parts.dtype)
        return {
            "text_embeds": text_embeds.to(parts.device, parts.dtype),
            "time_ids": time_ids.repeat(len(text_embeds), 1).to(parts.device),
        }
