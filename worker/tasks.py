"""One thin Celery task per stage. Each takes a job id, never tensors or ORM objects.

``max_retries=None``: a task retries without spending an attempt while another worker's lease
lives or while bulk work waits for company, and Celery's own cap (3) would drop its message
then; the attempts that count are capped in SQL (``IMGGEN_STAGE_MAX_ATTEMPTS``).
"""

from __future__ import annotations

from celery import Task

from producer.pipeline import task_name
from worker.app import app
from worker.queue.lifecycle import run_stage


@app.task(name=task_name("expand"), bind=True, max_retries=None)
def expand(self: Task, job_id: str) -> str:
    return run_stage(self, "expand", job_id)


@app.task(name=task_name("encode"), bind=True, max_retries=None)
def encode(self: Task, job_id: str) -> str:
    return run_stage(self, "encode", job_id)


@app.task(name=task_name("denoise"), bind=True, max_retries=None)
def denoise(self: Task, job_id: str) -> str:
    return run_stage(self, "denoise", job_id)


@app.task(name=task_name("decode"), bind=True, max_retries=None)
def decode(self: Task, job_id: str) -> str:
    return run_stage(self, "decode", job_id)


@app.task(name=task_name("score"), bind=True, max_retries=None)
def score(self: Task, job_id: str) -> str:
    return run_stage(self, "score", job_id)
