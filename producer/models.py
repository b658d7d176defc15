"""SQL records of jobs, their per-stage runs, images and metrics (SQLAlchemy 2.0).

SQL is the source of truth; the broker only wakes workers up. Unique keys on (job, stage),
(job, image index) and (image, metric name) make every stage safe to run twice.

Every table is here, in one module, although it passes 300 lines: the schema reads as one, as
the migrations build it, and Alembic's autogenerate compares this one metadata with the
database. Each class is a table and nothing else; queries live with the code that asks them.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use producer.models.utcnow()")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class StageStatus(str, enum.Enum):
    PENDING = "pending"  # an earlier stage has not finished
    QUEUED = "queued"  # its message was sent
    RUNNING = "running"  # a worker holds its lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"  # its job was canceled before it finished


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class ApiKey(Base):
    """A key for the HTTP API. Only a hash of the key is kept; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, to tell keys apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Signs this key's webhooks (HMAC needs the secret itself, so it is kept, unlike the key).
    # After a rotation the previous one also signs, for a grace period, so receivers can switch.
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(64))
    webhook_secret_rotated_at: Mapped[datetime | None]
    # Admin keys see every key's jobs, the workers and the dashboard; their own jobs are plain.
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Batch(Base):
    """A bulk run: jobs submitted together under one name, watched and steered together."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("owner_key_id", "name", name="uq_batches_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", name="fk_batches_owner_key_id"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))  # active or paused
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # A retried POST with the same Idempotency-Key finds the job the first one made.
        UniqueConstraint("owner_key_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        # A batch holds each row of its file once (a resumed submission skips it).
        UniqueConstraint("batch_id", "batch_row", name="uq_jobs_batch_row"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]]
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str | None] = mapped_column(Text)  # None: caption the input image
    expanded_prompt: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    input_image_uri: Mapped[str | None] = mapped_column(Text)
    batch_key: Mapped[str | None] = mapped_column(String(64), index=True)
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", name="fk_jobs_owner_key_id"), index=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # How its stages are scheduled (see scheduling.py): copied from the spec, for the ordering.
    lane: Mapped[str] = mapped_column(
        String(16), default="interactive", server_default="interactive"
    )
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("batches.id", name="fk_jobs_batch_id"), index=True
    )
    batch_row: Mapped[int | None] = mapped_column(Integer)  # the row's line in its file
    # Its batch is paused: running stages finish, nothing more of it is claimed.
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    seed: Mapped[int] = mapped_column(BigInteger)
    stage: Mapped[str | None] = mapped_column(String(16))
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    stage_runs: Mapped[list[StageRun]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="StageRun.id"
    )
    images: Mapped[list[Image]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="Image.index"
    )


class StageRun(Base):
    """One stage of one job: its attempts, lease, timing, error and output (artifact URIs, text)."""

    __tablename__ = "stage_runs"
    __table_args__ = (
        UniqueConstraint("job_id", "stage"),
        Index("ix_stage_runs_stage_status", "stage", "status"),
        Index("ix_stage_runs_stage_started_at", "stage", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]  # last time its message was published
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    output: Mapped[dict[str, Any] | None]

    job: Mapped[Job] = relationship(back_populates="stage_runs")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    discarded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")
    metrics: Mapped[list[Metric]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="Metric.name"
    )


class Metric(Base):
    """One quality number of one image, with the model (and version) that measured it."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("image_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(String(200))

    image: Mapped[Image] = relationship(back_populates="metrics")


class OutboxMessage(Base):
    """A stage message to publish: written in the transaction that makes the stage runnable.

    The relay deletes the row once the broker has the message, so a message survives a broker
    that is down at commit time, and a publish that fails after the commit is not lost.
    """

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("job_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    available_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """A callback to POST (durable outbox): retried with backoff until the receiver accepts it."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the exact bytes that are signed and sent
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan", order_by="WebhookAttempt.id"
    )


class WebhookAttempt(Base):
    """One try at delivering a webhook, kept for the record."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")


class LatentCacheEntry(Base):
    """A cached latent: a final result (``exact``) or an intermediate one (``semantic``).

    ``exact``: ``key`` hashes everything that decides one image (model, prompt after expansion,
    negative prompt, seed, size, steps, guidance, scheduler): the same key, the same latents.
    ``semantic``: ``key`` groups what must match for reuse (model, size, steps, guidance);
    ``step`` says how many steps the latent has had, ``embedding`` the prompt it was drawn for.
    """

    __tablename__ = "latent_cache"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    latent_uri: Mapped[str] = mapped_column(Text)
    source_job_id: Mapped[str | None] = mapped_column(String(32))
    source_image: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)


class WorkerHeartbeat(Base):
    """One worker process as it last said it was: what it consumes, which models it holds,
    what it runs. Each process writes its own row every few seconds; a row not written for
    a while is a worker that is gone."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # node name / pid
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    models: Mapped[list[str]] = mapped_column(JSON)  # resident diffusion models
    current_job_id: Mapped[str | None] = mapped_column(String(32))
    current_stage: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RegistryEntry(Base):
    """A model a worker host can serve, as that host's workers last found it in their models
    folder (the registry): one row per host and model, rewritten when what they find changes.
    The producer checks jobs against it at submit; the API lists it."""

    __tablename__ = "served_models"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)  # what a job names
    family: Mapped[str] = mapped_column(String(32))  # imggen's adapter: sd, sdxl, …; "" if refused
    pipeline: Mapped[str] = mapped_column(String(100))  # model_index.json's class
    native_width: Mapped[int | None] = mapped_column(Integer)
    native_height: Mapped[int | None] = mapped_column(Integer)
    samplers: Mapped[list[str]] = mapped_column(JSON)  # the job's `scheduler` may name these
    adapters: Mapped[list[str]] = mapped_column(JSON)  # LoRA names a job may ask for
    # Why the host cannot run the folder (an unsupported family, parts that do not fit); None
    # when it serves it. Kept so that a job for it is refused at submit with the reason.
    refused: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
