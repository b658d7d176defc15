"""What every family shares: the UNet and VAE checks, and the interface the stages call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from imggen.errors import UnsupportedModel
from imggen.samplers import SAMPLERS

if TYPE_CHECKING:
    from imggen.components import Components
    from imggen.embeddings import PromptEmbeddings

Config = Mapping[str, Any]


class Family:
    """A kind of diffusers folder: a UNet2DConditionModel and an AutoencoderKL, with the text
    encoders (and UNet conditioning) of its own."""

    name: ClassVar[str]
    pipelines: ClassVar[frozenset[str]]  # model_index.json class names of this family
    # (tokenizer folder, text encoder folder, text encoder class) for each encoder, in order.
    text_encoders: ClassVar[tuple[tuple[str, str, str], ...]]
    # In fp16, decode (and encode images) with the VAE in fp32: SDXL's VAE overflows in fp16.
    upcast_vae: ClassVar[bool] = False
    # The samplers a job may name (imggen.samplers): every one steps a UNet's noise prediction.
    samplers: ClassVar[tuple[str, ...]] = tuple(SAMPLERS)

    @property
    def parts(self) -> tuple[str, ...]:
        """The folders whose configs ``check`` reads."""
        return ("unet", "vae", *(encoder for _, encoder, _ in self.text_encoders))

    def check(self, configs: Mapping[str, Config], index: Config) -> None:
        """Raise UnsupportedModel unless the parts' configs fit this family."""
        unet, vae = configs["unet"], configs["vae"]
        _require(unet.get("_class_name") == "UNet2DConditionModel", "unet", unet.get("_class_name"))
        _require(vae.get("_class_name") == "AutoencoderKL", "vae", vae.get("_class_name"))
        for _, folder, cls in self.text_encoders:
            found = (configs[folder].get("architectures") or [None])[0]
            _require(found == cls, folder, found, f"{self.name} needs {cls}")
        if unet.get("in_channels") != vae.get("latent_channels"):
            raise UnsupportedModel(
                f"model: the UNet takes {unet.get('in_channels')} input channels where the VAE "
                f"makes {vae.get('latent_channels')} (an inpainting or depth model?), which "
                f"imggen does not run"
            )
        width = sum(configs[folder].get("hidden_size", 0) for _, folder, _ in self.text_encoders)
        if unet.get("cross_attention_dim") != width:
            raise UnsupportedModel(
                f"model: the UNet attends to {unet.get('cross_attention_dim')} features, the text "
                f"encoders give {width}"
            )

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
