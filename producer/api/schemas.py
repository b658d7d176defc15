"""What the HTTP API returns, as documented in its OpenAPI spec."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Progress(BaseModel):
    step: int | None
    total: int | None


class QueuePlace(BaseModel):
    position: int  # runs of its stage to be taken before it
    eta_seconds: float | None  # None until the stages have been measured


class StageView(BaseModel):
    stage: str
    status: str
    attempts: int
    duration_s: float | None
    error: str | None
    error_kind: str | None
    notes: list[str]


class ImageView(BaseModel):
    index: int
    uri: str
    seed: int
    width: int
    height: int
    discarded: bool
    metrics: dict[str, float]
    url: str | None = None


class JobUrls(BaseModel):
    self: str
    events: str
    images: list[str]


class JobView(BaseModel):
    id: str
    status: str
    stage: str | None
    progress: Progress
    queue: QueuePlace | None = None  # where it waits, while it waits at a stage
    model: str
    prompt: str | None
    expanded_prompt: str | None
    caption: str | None
    input_image: str | None
    spec: dict[str, Any]
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    cache: dict[str, Any] | None = None
    # expanded, mapped, mapped_by (table, embedder, language model, world words), expander (the
    # language model's folder name), cached
    expansion: dict[str, Any] | None = None
    stages: list[StageView]
    images: list[ImageView]
    urls: JobUrls | None = None


class BatchView(BaseModel):
    id: str
    name: str
    status: str  # active or paused
    created_at: str
    jobs: int
    counts: dict[str, int]  # jobs by status
    done: int  # jobs ended (succeeded, failed or canceled)
    images_per_s: float  # over the last minute
    eta_seconds: float | None


class BatchList(BaseModel):
    batches: list[BatchView]


class RowRefusal(BaseModel):
    row: int
    field: str
    msg: str


class BatchSubmitted(BaseModel):
    batch: BatchView
    submitted: int  # rows that became jobs now
    already: int  # rows the batch held already
    invalid: list[RowRefusal]  # skipped (skip_invalid)


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class Health(BaseModel):
    status: str  # ok, or unavailable
    dependencies: dict[str, str] = {}  # name -> ok, or down: why


class FieldError(BaseModel):
    loc: list[str]  # ["body", field], ["query", parameter]
    msg: str
    type: str


class FieldErrors(BaseModel):
    """422: each invalid field, named; nothing was written."""

    detail: list[FieldError]


class Refusal(BaseModel):
    """A refusal with its reason (404, 429, 503)."""

    detail: str
