"""One thin Celery task per stage. Each takes a job id, never tensors or ORM objects."""

from __future__ import annotations

from celery import Task

from producer.pipeline import task_name
from worker.app import app
from worker.queue.lifecycle import run_stage


@app.task(name=task_name("expand"), bind=True)
def expand(self: Task, job_id: str) -> str:
    return run_stage(self, "expand", job_id)


@app.task(name=task_name("encode"), bind=True)
def encode(self: Task, job_id: str) -> str:
    return run_stage(self, "encode", job_id)


@app.task(name=task_name("denoise"), bind=True)
def denoise(self: Task, job_id: str) -> str:
    return run_stage(self, "denoise", job_id)


@app.task(name=task_name("decode"), bind=True)
def decode(self: Task, job_id: str) -> str:
    return run_stage(self, "decode", job_id)


@app.task(name=task_name("score"), bind=True)
def score(self: Task, job_id: str) -> str:
    return run_stage(self, "score", job_id)
