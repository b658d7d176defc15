"""Submitting a bulk run: many jobs under one name, watched and steered together afterwards
(``batch_steering.py``).

A batch's rows (read by ``batch_rows.py``) are validated first, every one of them: each bad
row is reported by its line and field, and nothing is written unless the caller skips the bad
rows. The jobs go in the bulk lane, inserted in a few statements in one transaction (jobs,
their stage rows, their outbox rows); their first messages are then published in pipelined
round trips (``outbox.publish_many``; the relay sends whatever that leaves). The same name,
for the same owner, resumes a batch: rows it holds already (by line) are not submitted again,
and finished jobs are never redone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from producer.batch_rows import InvalidRows, RowError
from producer.db import in_transaction
from producer.errors import InvalidJobSpec
from producer.jobs import batch_key, new_job_id
from producer.metrics import JOBS_SUBMITTED, after_commit
from producer.models import (
    Batch,
    Job,
    JobStatus,
    OutboxMessage,
    StageRun,
    StageStatus,
    utcnow,
)
from producer.outbox import publish_many
from producer.pipeline import STAGES
from producer.queue import producer_app
from producer.spec import JobSpec, check_storable, with_native_size

if TYPE_CHECKING:
    from producer.client import Client
MAX_ROWS = 100_000


@dataclass
class Submitted:
    batch_id: str
    name: str
    submitted: int  # rows that became jobs now
    already: int  # rows the batch held already (a resumed submission)
    invalid: list[RowError] = field(default_factory=list)  # skipped, when skipping was asked


def prepare(
    client: Client, rows: list[tuple[int, dict[str, Any]]], defaults: dict[str, Any]
) -> tuple[list[tuple[int, JobSpec]], list[RowError]]:
    """Each row with ``defaults`` under it, as a bulk job's spec; the bad rows by line."""
    if len(rows) > MAX_ROWS:
        return [], [RowError(0, "rows", f"at most {MAX_ROWS} a batch, got {len(rows)}")]
    specs, errors = [], []
    for line, row in rows:
        if "image" in row or "has_input_image" in row:
            errors.append(RowError(line, "image", "batches are text-to-image"))
            continue
        try:
            specs.append((line, client.prepare(defaults | row | {"lane": "bulk"})))
        except InvalidJobSpec as exc:
            errors += [RowError(line, name, reason) for name, reason in exc.errors.items()]
    if not rows:
        errors.append(RowError(0, "rows", "the batch has none"))
    return specs, errors


def submit(
    client: Client,
    name: str,
    rows: list[tuple[int, dict[str, Any]]],
    *,
    defaults: dict[str, Any] | None = None,
    owner_key_id: int | None = None,
    skip_invalid: bool = False,
) -> Submitted:
    """Validate every row, then record the batch's new rows as jobs and send them."""
    if not name.strip() or len(name) > 200:
        raise InvalidJobSpec({"name": "must have 1 to 200 characters"})
    try:
        check_storable(name)
    except ValueError as exc:
        raise InvalidJobSpec({"name": str(exc)}) from None
    specs, errors = prepare(client, rows, defaults or {})
    if errors and not skip_invalid:
        raise InvalidRows(errors)
    settings, sizes = client.settings, {}
    for _, spec in specs:
        model = spec.model or settings.default_model
        if model not in sizes:
            sizes[model] = client.native_size(model)

    def record(session: Session) -> tuple[str, list[str], int]:
        batch = session.scalars(
            select(Batch).where(Batch.owner_key_id == owner_key_id, Batch.name == name)
        ).one_or_none()
        if batch is None:
            batch = Batch(id=new_job_id(), name=name, owner_key_id=owner_key_id, status="active")
            session.add(batch)
            session.flush()
        held = set(session.scalars(select(Job.batch_row).where(Job.batch_id == batch.id)).all())
        new = [(line, spec) for line, spec in specs if line not in held]
        ids = _insert_jobs(session, batch, new, owner_key_id, sizes, settings.default_model)
        return batch.id, ids, len(specs) - len(new)

    batch_id, ids, already = in_transaction(settings.resolved_database_url, record)
    publish_many(
        settings.resolved_database_url, producer_app(settings), [(i, STAGES[0]) for i in ids]
    )
    return Submitted(batch_id, name, len(ids), already, errors)


def _insert_jobs(
    session: Session,
    batch: Batch,
    rows: list[tuple[int, JobSpec]],
    owner_key_id: int | None,
    sizes: dict[str, tuple[int, int] | None],
    default_model: str,
) -> list[str]:
    """The rows as jobs, their stage rows and first messages: a few INSERTs, not 7 a job."""
    if not rows:
        return []
    now, jobs, runs, messages = utcnow(), [], [], []
    for line, spec in rows:
        model = spec.model or default_model
        spec = with_native_size(spec, sizes[model])
        job_id = new_job_id()
        jobs.append(
            {
                "id": job_id,
                "batch_key": batch_key(spec, model),
                "owner_key_id": owner_key_id,
                "lane": spec.lane,
                "priority": spec.priority,
                "batch_id": batch.id,
                "batch_row": line,
                "held": batch.status == "paused",
                "status": JobStatus.QUEUED.value,
                "spec": spec.model_dump(mode="json"),
                "model": model,
                "prompt": spec.prompt,
                "seed": spec.seed,
                "created_at": now,
                "updated_at": now,
            }
        )
        for i, stage in enumerate(STAGES):
            first = i == 0
            runs.append(
                {
                    "job_id": job_id,
                    "stage": stage,
                    "status": (StageStatus.QUEUED if first else StageStatus.PENDING).value,
                    "attempts": 0,
                    "enqueued_at": now if first else None,
                    "sent_at": now if first else None,
                }
            )
        messages.append({"job_id": job_id, "stage": STAGES[0], "available_at": now})
    connection = session.connection()
    connection.execute(insert(Job), jobs)
    connection.execute(insert(StageRun), runs)
    connection.execute(insert(OutboxMessage), messages)
    after_commit(session, lambda: JOBS_SUBMITTED.labels("bulk").inc(len(jobs)))
    return [str(job["id"]) for job in jobs]
