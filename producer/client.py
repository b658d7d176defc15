"""The Python client: submit jobs, follow them, cancel them, read their results.

Usable from a web backend without torch: it talks only to SQL and the broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from producer.db import session_scope
from producer.errors import JobFailed, JobNotFinished, JobTimeout
from producer.jobs import cancel_job, create_job, get_job, job_view
from producer.models import TERMINAL, JobStatus
from producer.pipeline import STAGES
from producer.queue import enqueue_stage, producer_app
from producer.settings import Settings, get_settings
from producer.spec import JobSpec, validate_spec

log = logging.getLogger(__name__)
_TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)


class Client:
    """Entry point for producers. ``settings`` default to the ``IMGGEN_*`` environment."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._db_url = self.settings.resolved_database_url

    def submit(self, prompt: str | None = None, **fields: Any) -> JobHandle:
        """Validate, record and enqueue one job.

        Raises InvalidJobSpec (naming each bad field) before anything is written or sent.
        """
        if prompt is not None:
            fields["prompt"] = prompt
        return self.submit_spec(validate_spec(fields))

    def submit_spec(self, spec: JobSpec) -> JobHandle:
        """Record and enqueue an already validated spec."""
        model = spec.model or self.settings.default_model
        with session_scope(self._db_url) as session:
            job_id = create_job(session, spec, model).id
        # Only after the commit: a worker must find the row the message points at.
        enqueue_stage(producer_app(self.settings), job_id, STAGES[0])
        return JobHandle(self, job_id)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job (checked lazily: its methods raise JobNotFound)."""
        return JobHandle(self, job_id)

    def view(self, job_id: str) -> dict[str, Any]:
        with session_scope(self._db_url) as session:
            return job_view(get_job(session, job_id, full=True))

    def cancel(self, job_id: str) -> bool:
        with session_scope(self._db_url) as session:
            return cancel_job(session, job_id)


class JobHandle:
    """One submitted job, as seen from the producer side."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def info(self) -> dict[str, Any]:
        """Everything known about the job: status, stage, progress, stages, images, metrics."""
        return self.client.view(self.id)

    def status(self) -> str:
        return str(self.info()["status"])

    def cancel(self) -> bool:
        """Cancel the job; False if it had already ended."""
        return self.client.cancel(self.id)

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float = 0.25,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends and return its info; raises JobTimeout after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.info()
            if on_progress is not None:
                on_progress(info)
            if info["status"] in _TERMINAL_VALUES:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still {info['status']} after {timeout}s")
            time.sleep(poll_interval)

    def result(self) -> dict[str, Any]:
        """The finished job's info (images with URIs and metrics).

        Raises JobFailed if it failed or was canceled, JobNotFinished if it is still going.
        """
        info = self.info()
        if info["status"] == JobStatus.SUCCEEDED.value:
            return info
        if info["status"] in _TERMINAL_VALUES:
            raise JobFailed(self.id, info["status"], info["error"])
        raise JobNotFinished(f"job {self.id} is {info['status']}")
