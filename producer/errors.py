"""Errors raised by the producer side. One root, each class says when it is raised."""

from __future__ import annotations


class ImggenError(Exception):
    """Root of every error imggen raises on purpose."""


class InvalidJobSpec(ImggenError, ValueError):
    """A job spec broke a rule; nothing was written or enqueued.

    ``errors`` maps each offending field to its reason, so callers (CLI, HTTP) can point at it.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        detail = "; ".join(f"{field}: {reason}" for field, reason in errors.items())
        super().__init__(f"invalid job spec: {detail}")


class JobNotFound(ImggenError, LookupError):
    """No job has the given id."""


class BatchNotFound(ImggenError, LookupError):
    """No batch has the given id."""


class JobTimeout(ImggenError, TimeoutError):
    """A job did not reach a terminal state within the time a caller was willing to wait."""


class JobFailed(ImggenError):
    """A job ended failed or canceled when its result was asked for; ``status`` says which."""

    def __init__(self, job_id: str, status: str, reason: str | None) -> None:
        self.job_id, self.status, self.reason = job_id, status, reason
        super().__init__(f"job {job_id} {status}: {reason or 'no reason recorded'}")


class JobNotFinished(ImggenError):
    """A job's result was asked for before it reached a terminal state."""
