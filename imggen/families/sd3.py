"""Stable Diffusion 3: an MMDiT transformer over flow matching, conditioned on two CLIP encoders'
penultimate states and T5's last hidden state (joined along the tokens, the CLIP part padded to
T5's width) and on both CLIP encoders' pooled embeddings, as diffusers' StableDiffusion3Pipeline
builds them. A folder may leave T5 out (model_index.json: null); its tokens are then zeros."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from diffusers import StableDiffusion3Pipeline

from imggen.embeddings import PromptEmbeddings
from imggen.errors import UnsupportedModel
from imggen.families.base import Config, Family, TextEncoder, tokenize

if TYPE_CHECKING:
    from imggen.components import Components

# T5 tokens, as diffusers' pipeline reads them by default.
T5_TOKENS = 256


class StableDiffusion3(Family):
    name: ClassVar[str] = "sd3"
    pipelines: ClassVar[frozenset[str]] = frozenset(
        {"StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"}
    )
    text_encoders: ClassVar[tuple[TextEncoder, ...]] = (
        TextEncoder("tokenizer", "text_encoder", "CLIPTextModelWithProjection"),
        TextEncoder("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection"),
        TextEncoder("tokenizer_3", "text_encoder_3", "T5EncoderModel", "T5TokenizerFast", True),
    )
    denoiser: ClassVar[tuple[str, str]] = ("transformer", "SD3Transformer2DModel")
    # Its own flow-matching Euler only: the UNet samplers step a noise prediction, not a flow.
    samplers: ClassVar[tuple[str, ...]] = ()

    def check_conditioning(self, configs: Mapping[str, Config], index: Config) -> None:
        transformer = configs["transformer"]
        clips = [configs[e.encoder] for e in self.encoders(index)[:2]]
        joint = transformer.get("joint_attention_dim")
        width = sum(clip.get("hidden_size", 0) for clip in clips)
        t5 = configs.get("text_encoder_3")
        if t5 is not None and t5.get("d_model") != joint:
            raise UnsupportedModel(
                f"model: the transformer attends to {joint} features, T5 gives {t5.get('d_model')}"
            )
        if joint is None or width > joint:
            raise UnsupportedModel(
                f"model: the transformer attends to {joint} features, the CLIP encoders give "
                f"{width}"
            )
        pooled = sum(clip.get("projection_dim", 0) for clip in clips)
        if transformer.get("pooled_projection_dim") != pooled:
            raise UnsupportedModel(
                f"model: the transformer takes {transformer.get('pooled_projection_dim')} pooled "
                f"features, the CLIP encoders give {pooled}"
            )

    def pipeline(self, parts: Components) -> StableDiffusion3Pipeline:
        return StableDiffusion3Pipeline(
            transformer=parts.transformer,
            scheduler=parts.scheduler,
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            text_encoder_2=parts.text_encoder_2,
            tokenizer_2=parts.tokenizer_2,
            text_encoder_3=parts.text_encoder_3,
            tokenizer_3=parts.tokenizer_3,
        )

    @torch.inference_mode()
    def encode_prompt(self, parts: Components, prompt: str, negative: str) -> PromptEmbeddings:
        assert parts.text_encoder_2 is not None and parts.tokenizer_2 is not None
        texts = [negative, prompt]
        hidden, pooled = [], []
        for tokenizer, encoder in (
            (parts.tokenizer, parts.text_encoder),
            (parts.tokenizer_2, parts.text_encoder_2),
        ):
            output = encoder(tokenize(tokenizer, texts, parts.device), output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
            pooled.append(output[0])
        clip = torch.cat(hidden, dim=-1)
        joint = parts.denoiser.config.joint_attention_dim
        if parts.text_encoder_3 is None:
            t5 = clip.new_zeros((len(texts), T5_TOKENS, joint))
        else:
            ids = parts.tokenizer_3(
                texts,
                padding="max_length",
                max_length=T5_TOKENS,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            ).input_ids.to(parts.device)
            t5 = parts.text_encoder_3(ids)[0]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        states = torch.cat([clip, t5.to(clip.dtype)], dim=-2).to(parts.dtype)
        pooled_all = torch.cat(pooled, dim=-1).to(parts.dtype)
        return PromptEmbeddings(
            cond=states[1:2],
            uncond=states[0:1],
            pooled=pooled_all[1:2].float().clone(),
            cond_pooled=pooled_all[1:2],
            uncond_pooled=pooled_all[0:1],
        )

    def added_conditioning(
        self,
        parts: Components,
        embeddings: Sequence[PromptEmbeddings],
        height: int,
        width: int,
        guided: bool,
    ) -> dict[str, torch.Tensor]:
        rows = [e.cond_pooled for e in embeddings]
        if guided:
            rows = [e.uncond_pooled for e in embeddings] + rows
        if any(row is None for row in rows):
            raise UnsupportedModel("embeddings: made by a model of another family")
        return {"pooled_projections": torch.cat(rows).to(parts.device, parts.dtype)}  # type: ignore[arg-type]

    def set_timesteps(self, parts: Components, scheduler: Any, steps: int, latents_hw: int) -> None:
        config = scheduler.config
        if not config.get("use_dynamic_shifting"):
            scheduler.set_timesteps(steps, device=parts.device)
            return
        # The schedule shifts with the image's size, as diffusers' calculate_shift.
        patch = parts.denoiser.config.patch_size
        seq = latents_hw // (patch * patch)
        base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        low, high = config.get("base_shift", 0.5), config.get("max_shift", 1.16)
        mu = low + (seq - base) * (high - low) / (top - base)
        scheduler.set_timesteps(steps, device=parts.device, mu=mu)

    def predict(
        self,
        parts: Components,
        model_input: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        added: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        return parts.denoiser(
            hidden_states=model_input,
            timestep=t.expand(model_input.shape[0]),
            encoder_hidden_states=context,
            pooled_projections=added["pooled_projections"],
        ).sample
