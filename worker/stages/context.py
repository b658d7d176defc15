"""What a stage function is given (``StageContext``) and what it gives back (``StageResult``).

A stage function reads its inputs (the job, earlier stages' outputs, the store), calls imggen,
and says what to keep; it commits nothing itself (the life cycle commits the result under the
stage's lease).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from producer.spec import JobSpec
from producer.stage_outputs import EarlierOutputs, StageOutput
from worker.stages.runtime import Runtime


@dataclass
class StageContext:
    job_id: str
    spec: JobSpec
    model: str
    input_image_uri: str | None
    outputs: EarlierOutputs  # what the job's earlier stages handed on
    runtime: Runtime
    on_step: Callable[[int, int], None]  # progress, lease renewal, cancellation
    max_batch: int | None = None  # images per denoising batch; None: all of the job's at once
    # Asked between denoising steps: whether the run should give way (to interactive work).
    should_yield: Callable[[], bool] | None = None

    def seeds(self) -> list[int]:
        return [self.spec.seed + i for i in range(self.spec.n)]

    def input_image(self) -> PILImage.Image | None:
        return self.runtime.load_image(self.input_image_uri) if self.input_image_uri else None


@dataclass(frozen=True)
class StageYielded:
    """The stage gave way after ``step`` steps: its run goes back to the queue, without an
    attempt, and goes on from there (what it had done is in the store)."""

    step: int


@dataclass
class StageResult:
    output: StageOutput
    persist: Callable[[Session, str], None] | None = None  # (session, job id)
    # What the stage wrote to the store, by URI, in memory: handed to the next stage if this
    # process runs it (see handover.py).
    artifacts: dict[str, Any] = field(default_factory=dict)
