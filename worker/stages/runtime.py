"""What one worker process keeps between tasks: settings, the artifact store, resident models.

Built lazily on the first task, never at import or in ``worker_process_init`` (whose handlers
Celery kills after 4 s, and CUDA must not be initialised before the pool forks).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image as PILImage

from producer.artifacts import ArtifactStore
from producer.metrics import MODEL_LOAD
from worker.settings import WorkerSettings, get_worker_settings

if TYPE_CHECKING:
    import torch

    from imggen import Components, ModelCache
    from imggen.aux_models import Captioner, Clip, LanguageModel, SentenceEmbedder
    from imggen.shapes.vocabulary import VocabularyMap
    from worker.stages.handover import Handover


@dataclass
class Runtime:
    settings: WorkerSettings
    store: ArtifactStore
    _models: ModelCache | None = field(default=None, repr=False)
    _handover: Handover | None = field(default=None, repr=False)
    _vocabulary: tuple[SentenceEmbedder, VocabularyMap] | None = field(default=None, repr=False)
    _draws_shapes: dict[str, bool] = field(default_factory=dict, repr=False)
    _model_ids: set[str] = field(default_factory=set, repr=False)  # the diffusion models asked for

    @property
    def models(self) -> ModelCache:
        if self._models is None:
            from imggen import ModelCache

            settings = self.settings
            self._models = ModelCache(
                settings.device,
                settings.dtype,
                compile_unet=settings.torch_compile,
                on_load=_count_load,
            )
        return self._models

    @property
    def handover(self) -> Handover:
        """What this process's committed stages wrote, for its next stages (see handover.py)."""
        if self._handover is None:
            from worker.stages.handover import Handover

            self._handover = Handover(self.settings.handover_mb * 1024 * 1024)
        return self._handover

    def model_folder(self, model_id: str) -> str:
        """Where ``model_id``'s weights are."""
        return self.settings.model_path(model_id)

    def draws_shapes(self, model_id: str) -> bool:
        """Whether ``model_id`` is a model of the shapes world (read once per process, like
        the resident model itself, not on every expand and score)."""
        if model_id not in self._draws_shapes:
            from imggen.shapes import draws_shapes

            self._draws_shapes[model_id] = draws_shapes(self.model_folder(model_id))
        return self._draws_shapes[model_id]

    def components(self, model_id: str) -> Components:
        """The resident diffusion model for ``model_id``, loaded on first use."""
        self._model_ids.add(model_id)
        return self.models.get(self.model_folder(model_id))

    def resident_models(self) -> list[str]:
        """The diffusion models this process holds, most recently used first (none loaded yet:
        nothing, without importing the model code)."""
        if self._models is None:
            return []
        # Folders are resolved here, on the heartbeat's thread, not on every stage's call.
        by_folder = {str(Path(self.model_folder(m)).resolve()): m for m in list(self._model_ids)}
        return [by_folder.get(folder, folder) for folder in self._models.resident()]

    def expander(self) -> LanguageModel | None:
        """The configured prompt expander, or None when the deployment has none."""
        from imggen.aux_models import load_language_model

        path = self.settings.expand_model
        return (
            self.models.get(self.settings.model_path(path), load_language_model) if path else None
        )

    def sentence_embedder(self) -> SentenceEmbedder | None:
        """The embedder for vocabulary mapping: the configured folder, or the packaged one
        when installed; None when the deployment has neither or turned it off."""
        from imggen.aux_models import load_sentence_embedder, packaged_sentence_embedder

        path = self.settings.embed_model
        if path is None or path.lower() == "none":
            return None
        folder = packaged_sentence_embedder() if path == "packaged" else path
        if folder is None:
            return None
        return self.models.get(self.settings.model_path(str(folder)), load_sentence_embedder)

    def vocabulary_map(self) -> VocabularyMap | None:
        """The shapes world's vocabulary map over the sentence embedder (built once)."""
        embedder = self.sentence_embedder()
        if embedder is None:
            return None
        if self._vocabulary is None or self._vocabulary[0] is not embedder:
            from imggen.shapes.vocabulary import VocabularyMap

            self._vocabulary = (embedder, VocabularyMap(embedder.embed))
        return self._vocabulary[1]

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

        handed_over = self.handover.take(uri)
        return handed_over if handed_over is not None else load(self.store.get(uri))

    def load_image(self, uri: str) -> PILImage.Image:
        handed_over = self.handover.take(uri)
        if handed_over is not None:
            return handed_over
        image = PILImage.open(io.BytesIO(self.store.get(uri)))
        image.load()
        return image


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    settings = get_worker_settings()
    return Runtime(settings=settings, store=ArtifactStore(settings.resolved_artifacts_url))


def _count_load(folder: str, seconds: float) -> None:
    MODEL_LOAD.labels(Path(folder).name).observe(seconds)
