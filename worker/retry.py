"""The retry policy, in one place: how failures are classified and how long to back off."""

from __future__ import annotations

import enum
import random

from imggen.errors import InvalidInput


class FailureKind(str, enum.Enum):
    INVALID = "invalid"  # the job cannot succeed: failed at once, never retried
    TRANSIENT = "transient"  # broker, database, I/O hiccups: retried with backoff
    OOM = "oom"  # out of accelerator memory: retried
    WORKER_LOST = "worker_lost"  # the process died mid-stage; counted as an attempt


def classify(exc: BaseException) -> FailureKind:
    if isinstance(exc, InvalidInput):
        return FailureKind.INVALID
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return FailureKind.OOM
    return FailureKind.TRANSIENT


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter, so retries of many jobs do not arrive together."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
