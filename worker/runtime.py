"""What one worker process keeps between tasks: settings, the artifact store, resident models.

Built lazily on the first task, never at import or in ``worker_process_init`` (whose handlers
Celery kills after 4 s, and CUDA must not be initialised before the pool forks).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from PIL import Image as PILImage

from producer.artifacts import ArtifactStore
from producer.settings import Settings, get_settings

if TYPE_CHECKING:
    import torch

    from imggen import Components, ModelCache
    from imggen.aux_models import Captioner, Clip, LanguageModel


@dataclass
class Runtime:
    settings: Settings
    store: ArtifactStore
    _models: ModelCache | None = field(default=None, repr=False)

    @property
    def models(self) -> ModelCache:
        if self._models is None:
            from imggen import ModelCache

            settings = self.settings
            self._models = ModelCache(
                settings.device, settings.dtype, compile_unet=settings.torch_compile
            )
        return self._models

    def components(self, model_id: str) -> Components:
        """The resident diffusion model for ``model_id``, loaded on first use."""
        return self.models.get(self.settings.model_path(model_id))

    def expander(self) -> LanguageModel | None:
        """The configured prompt expander, or None when the deployment has none."""
        from imggen.aux_models import load_language_model

        path = self.settings.expand_model
        return (
            self.models.get(self.settings.model_path(path), load_language_model) if path else None
        )

    def captioner(self) -> Captioner | None:
        from imggen.aux_models import load_captioner

        path = self.settings.caption_model
        return self.models.get(self.settings.model_path(path), load_captioner) if path else None

    def clip(self) -> Clip | None:
        from imggen.aux_models import load_clip

        path = self.settings.clip_model
        return self.models.get(self.settings.model_path(path), load_clip) if path else None

    def save_tensors(self, key: str, tensors: dict[str, torch.Tensor]) -> str:
        from safetensors.torch import save

        return self.store.put(
            key, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        )

    def load_tensors(self, uri: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        return load(self.store.get(uri))

    def load_image(self, uri: str) -> PILImage.Image:
        image = PILImage.open(io.BytesIO(self.store.get(uri)))
        image.load()
        return image


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    settings = get_settings()
    return Runtime(settings=settings, store=ArtifactStore(settings.resolved_artifacts_url))
