"""What every family shares: the denoiser and VAE checks, and the interface the stages call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from imggen.errors import UnsupportedModel
from imggen.samplers import SAMPLERS

if TYPE_CHECKING:
    from imggen.components import Components
    from imggen.embeddings import PromptEmbeddings

Config = Mapping[str, Any]


@dataclass(frozen=True)
class TextEncoder:
    tokenizer: str  # folder
    encoder: str  # folder
    encoder_class: str  # transformers class
    tokenizer_class: str = "CLIPTokenizer"
    optional: bool = False  # a folder may leave it out (model_index.json: null)


class Family:
    """A kind of diffusers folder: a denoiser (a UNet2DConditionModel unless the family says
    otherwise) and an AutoencoderKL, with text encoders and conditioning of its own."""

    name: ClassVar[str]
    pipelines: ClassVar[frozenset[str]]  # model_index.json class names of this family
    text_encoders: ClassVar[tuple[TextEncoder, ...]]
    denoiser: ClassVar[tuple[str, str]] = ("unet", "UNet2DConditionModel")  # folder, class
    # In fp16, decode (and encode images) with the VAE in fp32: SDXL's VAE overflows in fp16.
    upcast_vae: ClassVar[bool] = False
    # The samplers a job may name (imggen.samplers): every one steps a UNet's noise prediction.
    samplers: ClassVar[tuple[str, ...]] = tuple(SAMPLERS)

    def encoders(self, index: Config) -> list[TextEncoder]:
        """The text encoders the folder has (an optional one it leaves out is not there)."""
        return [
            e
            for e in self.text_encoders
            if not (e.optional and not any(index.get(e.encoder) or [None]))
        ]

    def parts(self, index: Config) -> tuple[str, ...]:
        """The folders whose configs ``check`` reads."""
        return (self.denoiser[0], "vae", *(e.encoder for e in self.encoders(index)))

    def check(self, configs: Mapping[str, Config], index: Config) -> None:
        """Raise UnsupportedModel unless the parts' configs fit this family."""
        folder, cls = self.denoiser
        denoiser, vae = configs[folder], configs["vae"]
        _require(denoiser.get("_class_name") == cls, folder, denoiser.get("_class_name"))
        _require(vae.get("_class_name") == "AutoencoderKL", "vae", vae.get("_class_name"))
        for encoder in self.encoders(index):
            found = (configs[encoder.encoder].get("architectures") or [None])[0]
            _require(
                found == encoder.encoder_class,
                encoder.encoder,
                found,
                f"{self.name} needs {encoder.encoder_class}",
            )
        if denoiser.get("in_channels") != vae.get("latent_channels"):
            raise UnsupportedModel(
                f"model: the {folder} takes {denoiser.get('in_channels')} input channels where "
                f"the VAE makes {vae.get('latent_channels')} (an inpainting or depth model?), "
                f"which imggen does not run"
            )
        self.check_conditioning(configs, index)

    def check_conditioning(self, configs: Mapping[str, Config], index: Config) -> None:
        """A UNet's cross-attention width against the text encoders' hidden states."""
        width = sum(configs[e.encoder].get("hidden_size", 0) for e in self.encoders(index))
        unet = configs["unet"]
        if unet.get("cross_attention_dim") != width:
            raise UnsupportedModel(
                f"model: the UNet attends to {unet.get('cross_attention_dim')} features, the text "
                f"encoders give {width}"
            )

    def set_timesteps(self, parts: Components, scheduler: Any, steps: int, latents_hw: int) -> None:
        """Set ``scheduler``'s timesteps for a run (``latents_hw``: latent pixels per image)."""
        scheduler.set_timesteps(steps, device=parts.device)

    def predict(
        self,
        parts: Components,
        model_input: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        added: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The denoiser's prediction for one step of a batch."""
        unet = parts.unet
        assert unet is not None
        return unet(
            model_input, t, encoder_hidden_states=context, added_cond_kwargs=added or None
        ).sample

    def pipeline(self, parts: Components) -> Any:
        """diffusers' pipeline over ``parts`` (sharing them), for its LoRA loader."""
        raise NotImplementedError

    def encode_prompt(self, parts: Components, prompt: str, negative: str) -> PromptEmbeddings:
        raise NotImplementedError

    def added_conditioning(
        self,
        parts: Components,
        embeddings: Sequence[PromptEmbeddings],
        height: int,
        width: int,
        guided: bool,
    ) -> dict[str, torch.Tensor]:
        """The UNet's ``added_cond_kwargs`` for a batch, one row per image laid out as the text
        conditioning is (unconditional rows first when ``guided``); empty when it takes none."""
        return {}


def _require(ok: bool, part: str, found: object, why: str = "") -> None:
    if not ok:
        reason = f" ({why})" if why else ""
        raise UnsupportedModel(f"model: {part} is {found!r}, not a part imggen runs{reason}")


def tokenize(tokenizer: Any, texts: list[str], device: torch.device) -> torch.Tensor:
    """Token ids padded and cut to the encoder's full length, as the models were trained."""
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
