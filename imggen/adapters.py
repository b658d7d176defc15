"""LoRA adapters per job: loaded into a resident model once, switched between jobs.

diffusers' own LoRA loader reads the adapter file (diffusers, PEFT and kohya/A1111 layouts) into
the UNet and text encoders through PEFT; switching the active set and weights changes no base
weights, so a job without adapters draws what the model draws alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from imggen.errors import InvalidInput, ModelNotFound

if TYPE_CHECKING:
    from imggen.components import Components

# Adapters kept loaded per model; the least recently used is deleted past this.
MAX_LOADED = 8


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path  # a .safetensors file
    weight: float = 1.0


class Adapters:
    """The adapters loaded into one resident model, and which are active."""

    def __init__(self, parts: Components) -> None:
        # A pipeline object over the resident components, for diffusers' loader: no copy.
        self._pipe: Any = parts.family.pipeline(parts)
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self._active: tuple[tuple[str, float], ...] | None = None

    def use(self, adapters: Sequence[Adapter]) -> None:
        """Make ``adapters`` (at their weights) the active set; none: the plain model."""
        wanted = tuple((a.name, a.weight) for a in adapters)
        if wanted == self._active:
            return
        self._active = None  # until the layers are set: a failed load leaves them unknown
        for adapter in adapters:
            self._load(adapter)
        if not adapters:
            if self._loaded:  # diffusers refuses to disable what was never loaded
                self._pipe.disable_lora()
        else:
            self._pipe.enable_lora()
            self._pipe.set_adapters([a.name for a in adapters], [a.weight for a in adapters])
        self._active = wanted

    def _load(self, adapter: Adapter) -> None:
        if self._loaded.get(adapter.name) == adapter.path:
            self._loaded.move_to_end(adapter.name)
            return
        if adapter.name in self._loaded:  # the same name, another file
            self._pipe.delete_adapters(adapter.name)
            del self._loaded[adapter.name]
        if not adapter.path.is_file() or adapter.path.suffix != ".safetensors":
            raise ModelNotFound(f"loras: no adapter {adapter.name!r} (a .safetensors file)")
        try:
            self._pipe.load_lora_weights(
                str(adapter.path.parent),
                weight_name=adapter.path.name,
                adapter_name=adapter.name,
                use_safetensors=True,
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            # Not a LoRA, or one of another model's layers (a size mismatch): take out what
            # was put in, so the model draws as before.
            if adapter.name in self._adapter_names():
                self._pipe.delete_adapters(adapter.name)
            first_line = str(exc).strip().splitlines()[:2]
            raise InvalidInput(
                f"loras: {adapter.name!r} does not fit this model: {' '.join(first_line)}"
            ) from exc
        self._loaded[adapter.name] = adapter.path
        while len(self._loaded) > MAX_LOADED:
            oldest, _ = self._loaded.popitem(last=False)
            self._pipe.delete_adapters(oldest)

    def _adapter_names(self) -> set[str]:
        return {name for names in self._pipe.get_list_adapters().values() for name in names}


def use_adapters(parts: Components, adapters: Sequence[Adapter]) -> None:
    """Activate ``adapters`` on ``parts`` (loading each on first use), or none."""
    if parts.adapters is None:
        if not adapters:
            return  # never given an adapter: the model has no LoRA layers to switch off
        parts.adapters = Adapters(parts)
    parts.adapters.use(adapters)
