"""What a stage run adds to the worker's Prometheus metrics (``producer.metrics``)."""

from __future__ import annotations

import sys
from pathlib import PurePath

from imggen.errors import StageAborted
from producer.metrics import (
    CACHE_HITS,
    DENOISE_BATCH_IMAGES,
    DENOISE_BATCH_JOBS,
    GPU_MEMORY,
    GPU_MEMORY_PEAK,
    STAGE_DURATION,
    STAGE_RUNS,
    UNET_STEPS,
    UNET_STEPS_SAVED,
)
from producer.stage_outputs import DenoiseOutput
from worker.queue.claims import Claimed
from worker.stages import Results
from worker.stages.context import StageResult, StageYielded


def batch_formed(batch: list[Claimed]) -> None:
    DENOISE_BATCH_JOBS.observe(len(batch))
    # The stored spec was validated at submit: its image count is read, not validated again.
    DENOISE_BATCH_IMAGES.observe(sum(int(claim.job.spec["n"]) for claim in batch))


def ran(batch: list[Claimed], seconds: float, results: Results | None) -> None:
    """A run of ``batch``'s stage took ``seconds``; ``results`` None: it raised."""
    first = batch[0]
    model = PurePath(first.job.model).name  # a folder's name, not where it is
    STAGE_DURATION.labels(first.stage, model).observe(seconds)
    for claim in batch:
        result = None if results is None else results.get(claim.job.id)
        STAGE_RUNS.labels(claim.stage, _outcome(result)).inc()
        if isinstance(result, StageResult) and isinstance(result.output, DenoiseOutput):
            cache = result.output.cache
            CACHE_HITS.labels("exact").inc(cache.exact_hits)
            CACHE_HITS.labels("semantic").inc(cache.semantic_hits)
            UNET_STEPS.inc(cache.unet_steps)
            UNET_STEPS_SAVED.inc(cache.steps_saved)
    _accelerator_memory()


def _outcome(result: object) -> str:
    if result is None:
        return "failed"
    if isinstance(result, StageAborted):
        return "aborted"
    if isinstance(result, StageYielded):
        return "yielded"
    return "succeeded"


def _accelerator_memory() -> None:
    torch = sys.modules.get("torch")  # a stage that never needed torch does not load it here
    if torch is None or not torch.cuda.is_available():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        GPU_MEMORY.labels(device).set(torch.cuda.memory_allocated(index))
        GPU_MEMORY_PEAK.labels(device).set(torch.cuda.max_memory_allocated(index))
        torch.cuda.reset_peak_memory_stats(index)
