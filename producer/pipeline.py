"""The stage contract shared by producers and workers: names, order, task names and queues.

Producers enqueue by task *name*, so they never import the worker code.
"""

from __future__ import annotations

STAGES: tuple[str, ...] = ("expand", "encode", "denoise", "decode", "score")


def task_name(stage: str) -> str:
    return f"imggen.stage.{stage}"


def queue_name(stage: str) -> str:
    """One queue per stage, so a deployment can give the GPU stages workers of their own."""
    return f"imggen.{stage}"


def next_stage(stage: str) -> str | None:
    index = STAGES.index(stage)
    return STAGES[index + 1] if index + 1 < len(STAGES) else None


ALL_QUEUES: tuple[str, ...] = tuple(queue_name(stage) for stage in STAGES)
