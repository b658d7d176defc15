"""The retry policy, in one place: what kind a failure is, whether it ends the job, and how long
the retry waits.

``decide`` is asked once per failed attempt. The attempt cap is also a condition of the claim in
SQL (``claims.py``): a worker killed mid-stage never reaches ``decide``, and its attempts must
end the job all the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from imggen.errors import InvalidInput
from producer.backoff import backoff_seconds


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


@dataclass(frozen=True)
class Fail:
    """The job fails, with this reason."""

    kind: FailureKind
    reason: str


@dataclass(frozen=True)
class RetryIn:
    """The stage runs again after ``seconds``."""

    kind: FailureKind
    reason: str
    seconds: float


def classify(exc: BaseException) -> FailureKind:
    if isinstance(exc, InvalidInput):
        return FailureKind.INVALID
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return FailureKind.OOM
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return FailureKind.PROGRAMMING
    return FailureKind.TRANSIENT


def decide(exc: BaseException, attempt: int, cap: int) -> Fail | RetryIn:
    """What follows attempt number ``attempt`` (of at most ``cap``) failing with ``exc``."""
    kind, reason = classify(exc), f"{type(exc).__name__}: {exc}"
    if kind in FINAL_KINDS or attempt >= cap:
        return Fail(kind, reason)
    return RetryIn(kind, reason, backoff_seconds(attempt))


def gave_up(stage: str, attempts: int, last_error: str | None) -> str:
    """The job's error when a claim finds the stage out of attempts (its workers were lost)."""
    return f"{stage}: gave up after {attempts} attempts; last error: {last_error}"
