"""imggen's generation library: the five stages over torch, diffusers and transformers.

It knows nothing of queues, SQL or HTTP, so it is usable from a notebook::

    from imggen import load_components, expand, encode_prompt, denoise, decode, score
    parts = load_components("path/to/model")
    emb = encode_prompt(parts, expand("a red fox").prompt)
    images = decode(parts, denoise(parts, emb, seeds=[7], steps=10, height=64, width=64))
"""

# The names below load lazily (PEP 562): ``from imggen.errors import …`` in the queue machinery
# must not import torch, diffusers and transformers.
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imggen.aux_models import (
        Captioner,
        Clip,
        LanguageModel,
        load_captioner,
        load_clip,
        load_language_model,
    )
    from imggen.components import Components, ModelCache, load_components
    from imggen.errors import (
        GenerationError,
        InvalidInput,
        ModelLoadError,
        ModelNotFound,
        StageAborted,
    )
    from imggen.stages.decode import decode, png_bytes
    from imggen.stages.denoise import denoise
    from imggen.stages.encode import PromptEmbeddings, encode_image, encode_prompt
    from imggen.stages.expand import Expansion, canonical_text, caption, expand
    from imggen.stages.score import score

_WHERE = {
    "Captioner": "imggen.aux_models",
    "Clip": "imggen.aux_models",
    "Components": "imggen.components",
    "Expansion": "imggen.stages.expand",
    "GenerationError": "imggen.errors",
    "InvalidInput": "imggen.errors",
    "LanguageModel": "imggen.aux_models",
    "ModelCache": "imggen.components",
    "ModelLoadError": "imggen.errors",
    "ModelNotFound": "imggen.errors",
    "PromptEmbeddings": "imggen.stages.encode",
    "StageAborted": "imggen.errors",
    "canonical_text": "imggen.stages.expand",
    "caption": "imggen.stages.expand",
    "decode": "imggen.stages.decode",
    "denoise": "imggen.stages.denoise",
    "encode_image": "imggen.stages.encode",
    "encode_prompt": "imggen.stages.encode",
    "expand": "imggen.stages.expand",
    "load_captioner": "imggen.aux_models",
    "load_clip": "imggen.aux_models",
    "load_components": "imggen.components",
    "load_language_model": "imggen.aux_models",
    "png_bytes": "imggen.stages.decode",
    "score": "imggen.stages.score",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'imggen' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "Captioner",
    "Clip",
    "Components",
    "Expansion",
    "GenerationError",
    "InvalidInput",
    "LanguageModel",
    "ModelCache",
    "ModelLoadError",
    "ModelNotFound",
    "PromptEmbeddings",
    "StageAborted",
    "canonical_text",
    "caption",
    "decode",
    "denoise",
    "encode_image",
    "encode_prompt",
    "expand",
    "load_captioner",
    "load_clip",
    "load_components",
    "load_language_model",
    "png_bytes",
    "score",
]
