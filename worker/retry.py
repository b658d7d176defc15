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
    PROGRAMMING = "programming"  # the code cannot run this job (a model it does not fit): failed
    # at once with the reason, since every retry would fail the same way


# Errors that say the code and the job do not fit, not that something went wrong for a while.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, NotImplementedError, AssertionError)

# Kinds that end the job at once.
FINAL_KINDS = frozenset({FailureKind.INVALID, FailureKind.PROGRAMMING})


def classify(exc: BaseException) -> FailureKind:
    if isinstance(exc, InvalidInput):
        return FailureKind.INVALID
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return FailureKind.OOM
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return FailureKind.PROGRAMMING
    return FailureKind.TRANSIENT


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter, so retries of many jobs do not arrive together."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
