"""What one worker process keeps between tasks: settings, the artifact store, resident models.

Built lazily on the first task, never at import or in ``worker_process_init`` (whose handlers
Celery kills after 4 s, and CUDA must not be initialised before the pool forks).
"""

from __future__ import annotations

import importlib.util
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image as PILImage

from producer.artifacts import ArtifactStore
from producer.metrics import MODEL_LOAD
from producer.spec import LoraRef
from worker.allocator import keep_freed_memory
from worker.settings import WorkerSettings, get_worker_settings

T = TypeVar("T")

if TYPE_CHECKING:
    import torch

    from imggen import Components, ModelCache
    from imggen.aux_models import Captioner, Clip, LanguageModel, SentenceEmbedder
    from imggen.shapes.dictionary import Dictionary
    from imggen.shapes.vocabulary import VocabularyMap
    from worker.stages.handover import Handover


class ModelOutputs:
    """A language model's outputs by their inputs, the least recently used dropped beyond
    ``size``: the same prompt, seed and settings never run the model twice in a process."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
        """The value for ``key`` and whether it was cached."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], True
        value = compute()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value, False


@dataclass
class Runtime:
    settings: WorkerSettings
    store: ArtifactStore
    _models: ModelCache | None = field(default=None, repr=False)
    _handover: Handover | None = field(default=None, repr=False)
    _vocabulary: tuple[tuple[object, ...], VocabularyMap] | None = field(default=None, repr=False)
    _dictionary: tuple[Dictionary | None] | None = field(default=None, repr=False)
    _draws_shapes: dict[str, bool] = field(default_factory=dict, repr=False)
    _model_ids: set[str] = field(default_factory=set, repr=False)  # the diffusion models asked for
    _expansions: ModelOutputs | None = field(default=None, repr=False)
    _tokenizers: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def models(self) -> ModelCache:
        if self._models is None:
            from imggen import ModelCache

            settings = self.settings
            if settings.reuse_freed_memory:
                # Before the first model allocates; the policy holds for the process's life.
                keep_freed_memory()
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

    def components(self, model_id: str, loras: Sequence[LoraRef] | None = None) -> Components:
        """The resident diffusion model for ``model_id``, loaded on first use; with ``loras``,
        those adapters made the active set (none: the plain model) for the stage to run."""
        self._model_ids.add(model_id)
        parts: Components = self.models.get(self.model_folder(model_id))
        if loras is not None:
            from imggen.adapters import Adapter, use_adapters

            folder = self.settings.resolved_loras_dir
            use_adapters(
                parts,
                [Adapter(a.name, folder / f"{a.name}.safetensors", a.weight) for a in loras],
            )
        return parts

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

        path = self.settings.expand_model_path()
        return self.models.get(path, load_language_model) if path else None

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

    def dictionary(self) -> Dictionary | None:
        """WordNet, when the deployment has it (opened once)."""
        if self._dictionary is None:
            from imggen.shapes.dictionary import Dictionary, installed_dictionary

            folder, named = self.settings.wordnet, self.settings.wordnet_folder()
            if named is not None:
                self._dictionary = (Dictionary(named),)
            elif folder is not None and folder.lower() == "auto":
                self._dictionary = (installed_dictionary(),)
            else:
                self._dictionary = (None,)
        return self._dictionary[0]

    def vocabulary_map(self) -> VocabularyMap:
        """The shapes world's vocabulary map: the colour table, and the dictionary, the
        sentence embedder and the expander where the deployment has them (built once)."""
        embedder, expander, dictionary = (
            self.sentence_embedder(),
            self.expander(),
            self.dictionary(),
        )
        sources = (embedder, expander, dictionary)
        known = self._vocabulary[0] if self._vocabulary else (None, None, None)
        if self._vocabulary is None or any(a is not b for a, b in zip(known, sources, strict=True)):
            from imggen.shapes.vocabulary import VocabularyMap

            vocabulary = VocabularyMap(
                embedder.embed if embedder else None,
                expander.likelihood if expander else None,
                colour_table=importlib.util.find_spec("matplotlib") is not None,
                dictionary=dictionary,
            )
            self._vocabulary = (sources, vocabulary)
        return self._vocabulary[1]

    @property
    def expansions(self) -> ModelOutputs:
        if self._expansions is None:
            self._expansions = ModelOutputs(self.settings.expand_cache_entries)
        return self._expansions

    def token_budget(self, model_id: str) -> Callable[[str], bool] | None:
        """Whether a prompt fits ``model_id``'s text encoder (its tokenizer, read once, without
        the model), or None when the folder has no tokenizer."""
        if model_id not in self._tokenizers:
            from transformers import AutoTokenizer

            folder = Path(self.model_folder(model_id)) / "tokenizer"
            self._tokenizers[model_id] = (
                AutoTokenizer.from_pretrained(folder, local_files_only=True)
                if folder.is_dir()
                else None
            )
        tokenizer = self._tokenizers[model_id]
        if tokenizer is None:
            return None
        return lambda text: len(tokenizer(text).input_ids) <= tokenizer.model_max_length

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
