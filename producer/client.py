"""The Python client: submit jobs, follow them, cancel them, read their results.

Usable from a web backend without torch: it talks only to SQL and the broker.

One module, over 300 lines: ``Client`` is the one object a producer imports, and its methods
are thin (each calls the module that does the work: jobs, batches, batch_steering, outbox).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from producer import batch_steering
from producer.artifacts import ArtifactStore, job_key
from producer.catalog import native_size, unserved
from producer.db import in_transaction
from producer.errors import (
    BatchNotFound,
    InvalidJobSpec,
    JobFailed,
    JobNotFinished,
    JobTimeout,
)
from producer.events import Watch
from producer.images import InputImage, validate_input_image
from producer.jobs import cancel_job, create_job, get_job, job_view, new_job_id
from producer.models import TERMINAL, Job, JobStatus
from producer.outbox import publish_now
from producer.pipeline import STAGES
from producer.queue import producer_app
from producer.registry import RegistryView
from producer.settings import Settings, get_settings
from producer.spec import JobSpec, check_storable, validate_spec, with_native_size

log = logging.getLogger(__name__)
_TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)
MAX_IDEMPOTENCY_KEY_CHARS = 200  # the column's size


class Client:
    """Entry point for producers. ``settings`` default to the ``IMGGEN_*`` environment."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._db_url = self.settings.resolved_database_url

    def submit(
        self,
        prompt: str | None = None,
        *,
        image: bytes | str | Path | None = None,
        owner_key_id: int | None = None,
        idempotency_key: str | None = None,
        admit: Callable[[Session], None] | None = None,
        **fields: Any,
    ) -> JobHandle:
        """Validate, record and enqueue one job.

        ``image`` (bytes or a file path) makes it an image-to-image job; its prompt may then be
        left out (the image is captioned). Raises InvalidJobSpec, naming each bad field, before
        anything is written, stored or sent.
        """
        if prompt is not None:
            fields["prompt"] = prompt
        fields["has_input_image"] = image is not None
        spec = self.prepare(fields)
        checked = None
        if image is not None:
            checked = validate_input_image(
                image if isinstance(image, bytes) else _read_image_file(image),
                max_bytes=self.settings.max_input_image_bytes,
                max_pixels=self.settings.max_input_image_pixels,
            )
        return self.submit_spec(
            spec, checked, owner_key_id=owner_key_id, idempotency_key=idempotency_key, admit=admit
        )

    def submit_spec(
        self,
        spec: JobSpec,
        image: InputImage | None = None,
        *,
        owner_key_id: int | None = None,
        idempotency_key: str | None = None,
        admit: Callable[[Session], None] | None = None,
    ) -> JobHandle:
        """Record and enqueue an already validated spec (and its validated input image).

        With an ``idempotency_key``, a second call with the same key (and owner) returns the
        job the first one made instead of making another. ``admit`` runs first in the
        transaction that inserts the job (a quota check); what it raises, nothing is written.
        """
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
            earlier = self.idempotent_job(owner_key_id, idempotency_key)
            if earlier is not None:
                return JobHandle(self, earlier, replayed=True)
        model = spec.model or self.settings.default_model
        spec = with_native_size(spec, self.native_size(model))
        job_id = new_job_id()
        image_uri = None
        if image is not None:
            # The name comes from the job id, never from the user.
            key = job_key(job_id, f"input.{image.format}")
            image_uri = self.store.put(key, image.data)

        def record(session: Session) -> None:
            if admit is not None:
                admit(session)
            create_job(
                session,
                spec,
                model,
                job_id=job_id,
                input_image_uri=image_uri,
                owner_key_id=owner_key_id,
                idempotency_key=idempotency_key,
            )

        try:
            try:
                # The job, its stages and its first message, in one transaction.
                in_transaction(self._db_url, record)
            except BaseException:
                if image_uri is not None:  # no job will ever read it
                    self.store.delete(image_uri)
                raise
        except IntegrityError:
            # A concurrent request with the same idempotency key won the race: return its job.
            if idempotency_key is None:
                raise
            earlier = self.idempotent_job(owner_key_id, idempotency_key)
            if earlier is None:
                raise
            return JobHandle(self, earlier, replayed=True)
        # Publish now if the broker answers; if not, the job is safe in SQL and the relay
        # (run by every worker) sends it when the broker is back.
        try:
            publish_now(self._db_url, producer_app(self.settings), job_id, STAGES[0])
        except Exception:  # noqa: BLE001 - a broker or database hiccup after the commit
            log.warning("job %s recorded; its message waits in the outbox", job_id, exc_info=True)
        return JobHandle(self, job_id)

    def submit_batch(
        self,
        rows: Iterable[dict[str, Any]],
        *,
        name: str,
        skip_invalid: bool = False,
        **defaults: Any,
    ) -> str:
        """Submit ``rows`` (each a job's fields over ``defaults``) as the batch ``name``, in the
        bulk lane; returns its id. Every row is checked first (raises InvalidRows naming each
        bad one, and writes nothing, unless ``skip_invalid``); the same name resumes it."""
        from producer import batches

        numbered = list(enumerate(rows, 1))
        return batches.submit(
            self, name, numbered, defaults=defaults, skip_invalid=skip_invalid
        ).batch_id

    def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch's counts by status, images a second and ETA (as ``imggen batch ID`` shows
        them); raises BatchNotFound."""

        def read(session: Session) -> dict[str, Any]:
            batch = batch_steering.find(session, batch_id)
            if batch is None:
                raise BatchNotFound(f"no batch with id {batch_id!r}")
            return batch_steering.summary(session, batch)

        return in_transaction(self._db_url, read)

    def wait_batch(
        self,
        batch_id: str,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until every job of the batch has ended, and return its summary; raises
        JobTimeout after ``timeout`` s. The batch is read every ``poll_interval`` seconds: one
        read of its counts, however many jobs it holds (a bulk run is followed by its jobs
        ending, not by each job's events)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.batch(batch_id)
            if on_progress is not None:
                on_progress(view)
            if view["done"] >= view["jobs"]:
                return view
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobTimeout(f"batch {batch_id}: {view['done']} of {view['jobs']} jobs ended")
            time.sleep(poll_interval if left is None else min(poll_interval, left))

    def prepare(self, fields: dict[str, Any]) -> JobSpec:
        """A job's fields validated as a spec this deployment can run; raises InvalidJobSpec."""
        spec = validate_spec(fields, self.settings.webhook_allowed_hosts)
        self._check_served(spec)
        return spec

    def _check_served(self, spec: JobSpec) -> None:
        """What JobSpec cannot judge alone: the model, sampler and adapters are ones this
        deployment's workers serve (``catalog.unserved``; a refusal is judged on a fresh read
        of the registry, never a cached one), and a best-of-N ranks by a metric something here
        measures (else it would keep every image and call that a success)."""
        model = spec.model or self.settings.default_model
        errors = unserved(self.settings, spec, model, self.registry.models())
        if errors:
            errors = unserved(self.settings, spec, model, self.registry.models(fresh=True))
        if errors:
            raise InvalidJobSpec(errors)
        if (
            spec.keep_best is not None
            and spec.rank_by == "clip_score"
            and not self.settings.clip_model
        ):
            raise InvalidJobSpec(
                {
                    "rank_by": "clip_score is not measured here: no CLIP model is configured "
                    "(IMGGEN_CLIP_MODEL); rank by another metric"
                }
            )

    @cached_property
    def registry(self) -> RegistryView:
        return RegistryView(self._db_url)

    def native_size(self, model: str) -> tuple[int, int] | None:
        """The size ``model`` draws when a job names none: as its folder declares it, else as
        the registry says."""
        size = native_size(self.settings, model)
        if size is None:
            entry = self.registry.models().get(model)
            size = entry.native_size if entry is not None else None
        return size

    def idempotent_job(self, owner_key_id: int | None, key: str) -> str | None:
        query = select(Job.id).where(Job.owner_key_id == owner_key_id, Job.idempotency_key == key)
        return in_transaction(self._db_url, lambda session: session.scalar(query))

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.resolved_artifacts_url)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job (checked lazily: its methods raise JobNotFound)."""
        return JobHandle(self, job_id)

    def view(self, job_id: str) -> dict[str, Any]:
        return in_transaction(
            self._db_url, lambda s: job_view(get_job(s, job_id, full=True), place=True)
        )

    def cancel(self, job_id: str) -> bool:
        return in_transaction(self._db_url, lambda session: cancel_job(session, job_id))


def _check_idempotency_key(key: str) -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidJobSpec(
            {"idempotency_key": f"must have at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"}
        )
    try:
        check_storable(key)
    except ValueError as exc:
        raise InvalidJobSpec({"idempotency_key": str(exc)}) from None


def _read_image_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidJobSpec({"image": f"cannot read {path}: {exc.strerror}"}) from None


class JobHandle:
    """One submitted job, as seen from the producer side."""

    def __init__(self, client: Client, job_id: str, *, replayed: bool = False) -> None:
        self.client = client
        self.id = job_id
        self.replayed = replayed  # returned for a repeated idempotency key

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
        poll_interval: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends and return its info; raises JobTimeout after ``timeout`` s.

        Woken by the job events that workers publish (Redis), so the end is seen at once; the
        job is also read every ``poll_interval`` seconds (default: 2 with Redis, as a safety
        net; 0.25 without).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with Watch(self.client.settings.resolved_redis_url, self.id) as changes:
            interval = poll_interval or (2.0 if changes.pushed else 0.25)
            while True:
                info = self.info()
                if on_progress is not None:
                    on_progress(info)
                if info["status"] in _TERMINAL_VALUES:
                    return info
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise JobTimeout(f"job {self.id} still {info['status']} after {timeout}s")
                changes.wait(interval if left is None else min(interval, left))

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
