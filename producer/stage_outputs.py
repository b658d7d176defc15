"""What each stage hands on: one model per stage, stored as the stage run's JSON ``output``.

Defined here, where both sides read them: the worker's stages write them and read their
predecessors', the producer reads them back for a job's view (its cache record, its notes).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict


class StageOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: ClassVar[str]
    notes: list[str] = []  # what the stage skipped, and why


class ExpandOutput(StageOutput):
    stage = "expand"
    original: str  # the user's prompt, or the caption that stood for it
    prompt: str  # what the later stages draw: expanded and mapped onto the model's words
    expanded: bool = False
    mapped: bool = False
    caption: str | None = None
    expander: str | None = None  # the language model that expanded or mapped it
    mapped_by: list[str] = []  # what mapped it onto the model's words (table, embedder…)
    cached: bool = False  # the expansion came from the worker's cache of model outputs


class EncodeOutput(StageOutput):
    stage = "encode"
    embeddings: str  # URI of the prompt embeddings (safetensors)
    image_latents: str | None = None  # URI of the input image's latents, for image-to-image


class CacheRecord(BaseModel):
    """What the caches saved one job's denoise, and the batch it ran in."""

    exact_hits: int = 0
    semantic_hits: int = 0
    skipped_steps: list[int] = []  # per image
    similarity: list[float | None] = []  # per image: the semantic hit's prompt similarity
    steps_saved: int = 0
    unet_steps: int = 0
    batch_jobs: int = 1
    batch_images: int = 1
    # The step its denoise went on from, having given way to interactive work.
    resumed_from: int | None = None


class DenoiseOutput(StageOutput):
    stage = "denoise"
    latents: str  # URI of the final latents of the job's images
    cache: CacheRecord = CacheRecord()


class DecodeOutput(StageOutput):
    stage = "decode"
    images: list[str]  # URIs of the PNGs, by image index


class ScoreOutput(StageOutput):
    stage = "score"
    metrics: list[str]  # names of the metrics measured
    kept: list[int]  # indexes of the images kept (best of N)


OUTPUT_TYPES: dict[str, type[StageOutput]] = {
    kind.stage: kind
    for kind in (ExpandOutput, EncodeOutput, DenoiseOutput, DecodeOutput, ScoreOutput)
}

Output = TypeVar("Output", bound=StageOutput)


class EarlierOutputs:
    """The outputs of a job's finished stages, as the next stage reads them."""

    def __init__(self, outputs: dict[str, StageOutput] | None = None) -> None:
        self._outputs = dict(outputs or {})

    @classmethod
    def from_stored(cls, stored: dict[str, dict[str, Any] | None]) -> EarlierOutputs:
        """From the stage runs' JSON, by stage name (stages not run yet have none)."""
        return cls({stage: read_output(stage, value) for stage, value in stored.items() if value})

    def get(self, kind: type[Output]) -> Output:
        output = self._outputs.get(kind.stage)
        if not isinstance(output, kind):
            raise LookupError(f"the {kind.stage} stage has not handed on its output")
        return output

    def add(self, output: StageOutput) -> None:
        self._outputs[output.stage] = output


def read_output(stage: str, stored: dict[str, Any]) -> StageOutput:
    return OUTPUT_TYPES[stage].model_validate(stored)


def cache_record(stored: dict[str, Any] | None) -> CacheRecord | None:
    """A denoise run's cache record, from its stored output (None before it ran)."""
    return DenoiseOutput.model_validate(stored).cache if stored else None


def expansion_record(stored: dict[str, Any]) -> dict[str, Any]:
    """What a job's view shows of its expand run: how the prompt drawn came about. The
    language model is named by its folder, not its path on a worker."""
    output = ExpandOutput.model_validate(stored)
    return {
        "expanded": output.expanded,
        "mapped": output.mapped,
        "mapped_by": output.mapped_by,
        "expander": output.expander.replace("\\", "/").rsplit("/", 1)[-1]
        if output.expander
        else None,
        "cached": output.cached,
    }
