"""Loading a diffusion model from a local diffusers folder, and keeping it resident.

Weights load only from safetensors and never run remote code: a model folder is data, not code.
The folder's family (imggen.families) decides which text encoders load and how they condition
the UNet; a folder no family runs is refused before any weights load.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from imggen.adapters import Adapters
from imggen.errors import InvalidInput, ModelLoadError, ModelNotFound
from imggen.families import Family, family_of, read_config
from imggen.samplers import build_scheduler

T = TypeVar("T")

# Only these scheduler classes may be named by a model folder's scheduler_config.json.
_SCHEDULERS = {
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "LMSDiscreteScheduler",
    "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "LCMScheduler",
}


@dataclass
class Components:
    """The parts of a text-to-image model. Stages read them; none of them holds a job's state."""

    model_id: str
    family: Family
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel | None  # the denoiser of the UNet families
    vae: AutoencoderKL
    scheduler: SchedulerMixin
    device: torch.device
    dtype: torch.dtype
    tokenizer_2: CLIPTokenizer | None = None
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_3: Any = None  # SD3's T5 tokenizer
    text_encoder_3: Any = None  # SD3's T5 encoder, where the folder has it
    transformer: Any = None  # the denoiser of the transformer families (SD3)
    pipeline_config: dict[str, Any] = field(default_factory=dict)  # model_index.json
    adapters: Adapters | None = field(default=None, repr=False)  # LoRA, once a job asks for one

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def denoiser(self) -> Any:
        """The network that predicts each step: the UNet, or the transformer."""
        found = self.unet if self.unet is not None else self.transformer
        assert found is not None, "a model has a UNet or a transformer"
        return found

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels)

    def fresh_scheduler(self, sampler: str | None = None) -> SchedulerMixin:
        """A scheduler of its own for one run (schedulers keep per-run state, the timesteps):
        the model's own, or the named sampler (imggen.samplers) over the model's config."""
        return build_scheduler(self.scheduler, sampler)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA (bf16 where supported is an explicit choice), fp32 on the CPU."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    except KeyError:
        raise InvalidInput(f"dtype: expected auto, fp32, fp16 or bf16, got {dtype!r}") from None


def load_components(
    path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    compile_unet: bool = False,
) -> Components:
    """Load every part of the model in ``path`` (a diffusers folder) onto ``device``.

    ``compile_unet`` wraps the UNet in ``torch.compile`` (slow first batches, faster after).
    Raises ModelNotFound if the folder or one of its parts is missing.
    """
    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise ModelNotFound(f"model: no diffusers model folder (model_index.json) at {root}")
    family = family_of(root)  # refuses what imggen cannot run, from the configs alone
    index = read_config(root)
    encoders = family.encoders(index)
    denoiser_folder, denoiser_class = family.denoiser
    for part in (denoiser_folder, "vae", *(e.encoder for e in encoders)):
        require_safetensors(root / part, "model")
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, torch_device)
    vae_dtype = torch.float32 if family.upcast_vae and torch_dtype == torch.float16 else torch_dtype
    weights: dict[str, Any] = {"use_safetensors": True, "local_files_only": True}
    loaded: dict[str, Any] = {}
    try:
        # The classes come from the family's own list, never from the folder's JSON.
        for e in encoders:
            loaded[e.tokenizer] = getattr(transformers, e.tokenizer_class).from_pretrained(
                root, subfolder=e.tokenizer, local_files_only=True
            )
            encoder = getattr(transformers, e.encoder_class).from_pretrained(
                root, subfolder=e.encoder, **weights
            )
            loaded[e.encoder] = encoder.to(torch_device, torch_dtype).eval()
        denoiser = getattr(diffusers, denoiser_class).from_pretrained(
            root, subfolder=denoiser_folder, torch_dtype=torch_dtype, **weights
        )
        loaded[denoiser_folder] = denoiser.to(torch_device).eval()
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=vae_dtype, **weights)
    except OSError as exc:  # the files are there (checked above): a failed read, retry it
        raise ModelLoadError(f"model: cannot load {root}: {exc}") from exc
    parts = Components(
        model_id=str(root),
        family=family,
        unet=loaded.pop("unet", None),
        vae=vae.to(torch_device).eval(),
        scheduler=_load_scheduler(root),
        device=torch_device,
        dtype=torch_dtype,
        pipeline_config=index,
        **loaded,
    )
    if torch_device.type == "cuda" and parts.unet is not None:
        # NHWC convolutions are faster on tensor cores; SDPA attention is diffusers' default.
        parts.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        compiled = torch.compile(parts.denoiser)
        if parts.unet is not None:
            parts.unet = compiled
        else:
            parts.transformer = compiled
    return parts


def require_safetensors(folder: Path, what: str) -> None:
    """Raise ModelNotFound unless ``folder`` holds weights in safetensors (whole or sharded)."""
    if not folder.is_dir() or not (
        any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
    ):
        raise ModelNotFound(f"{what}: no safetensors weights in {folder}")


def _load_scheduler(root: Path) -> SchedulerMixin:
    name = read_config(root, "scheduler").get("_class_name")
    if name not in _SCHEDULERS:
        raise InvalidInput(f"model: scheduler {name!r} is not one imggen supports")
    scheduler_cls = getattr(diffusers, name)
    return scheduler_cls.from_pretrained(root, subfolder="scheduler")


class ModelCache:
    """Models resident in one process, least recently used evicted past ``max_models``.

    Loading takes seconds to minutes, so a worker loads each model once, on first use. Any kind
    of model can be kept: ``get`` takes the loader to call on a miss.
    """

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "auto",
        max_models: int = 4,
        compile_unet: bool = False,
        on_load: Callable[[str, float], None] | None = None,
    ) -> None:
        self.device, self.dtype, self.max_models = device, dtype, max_models
        self.compile_unet = compile_unet
        self.on_load = on_load  # called with (folder, seconds) after each load
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def resident(self) -> list[str]:
        """The folders of the diffusion models held, most recently used first."""
        with self._lock:
            keys = list(self._models)
        return [path for loader, path in reversed(keys) if loader == "load_components"]

    def get(self, path: str | Path, loader: Callable[..., T] | None = None) -> T:
        """The model at ``path`` as ``loader(path, device, dtype)`` returns it (default: SD)."""
        key = (loader.__qualname__ if loader else "load_components", str(Path(path).resolve()))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            started = time.perf_counter()
            model: Any = (
                load_components(key[1], self.device, self.dtype, self.compile_unet)
                if loader is None
                else loader(key[1], self.device, self.dtype)
            )
            self.loads += 1
            if self.on_load is not None:
                self.on_load(key[1], time.perf_counter() - started)
            self._models[key] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model
