"""The worker side of the five stages: one module per stage, registered here by name.

A stage's module is imported the first time the stage runs, not with this package: the queue
machinery imports the registry, and must not load torch where no stage runs (``imggen
sweeper``, the producer side).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from imggen.errors import StageAborted
from worker.first_imports import first_use

if TYPE_CHECKING:
    from worker.stages.context import StageContext, StageResult, StageYielded

Results = dict[str, "StageResult | StageAborted | StageYielded"]  # by job id


@dataclass(frozen=True)
class StageDefinition:
    function: str  # "module:name", imported on first use
    # Runs several compatible jobs at once: takes every job's context, returns every job's
    # result (a batched denoise). Otherwise it takes one context and returns one result.
    batched: bool = False

    def load(self) -> Callable[..., object]:
        module, name = self.function.split(":")
        return cast(Callable[..., object], getattr(importlib.import_module(module), name))


STAGES: dict[str, StageDefinition] = {
    "expand": StageDefinition("worker.stages.expand:expand"),
    "encode": StageDefinition("worker.stages.encode:encode"),
    "denoise": StageDefinition("worker.stages.denoise:denoise_jobs", batched=True),
    "decode": StageDefinition("worker.stages.decode:decode"),
    "score": StageDefinition("worker.stages.score:score"),
}


def perform(stage: str, contexts: list[StageContext]) -> Results:
    """Run ``stage`` for ``contexts`` (one job, or a batch when the stage batches)."""
    definition = STAGES[stage]
    with first_use("stage"):  # the first stage's imports apart from the registry's
        function = definition.load()
        try:
            if definition.batched:
                return cast(Results, function(contexts))
            (context,) = contexts
            return {context.job_id: cast("StageResult", function(context))}
        except StageAborted as aborted:  # every job of the run was canceled (or lost its lease)
            return {context.job_id: aborted for context in contexts}
