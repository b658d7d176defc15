"""imggen's generation library: the five stages over torch, diffusers and transformers.

It knows nothing of queues, SQL or HTTP, so it is usable from a notebook::

    from imggen import load_components, expand, encode_prompt, denoise, decode, score
    parts = load_components("path/to/model")
    emb = encode_prompt(parts, expand("a red fox").prompt)
    images = decode(parts, denoise(parts, emb, seeds=[7], steps=10, height=64, width=64))
"""

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
from imggen.stages.expand import Expansion, caption, expand
from imggen.stages.score import score

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
