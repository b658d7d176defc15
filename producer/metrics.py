"""Prometheus metrics: what the API and the workers count, and what SQL says at scrape time.

Counters and histograms live in the process that does the work (a Celery pool process, an API
process). Where a server has several processes, prometheus-client's multiprocess mode gathers
them: ``PROMETHEUS_MULTIPROC_DIR`` names a fresh folder that every process writes to, set before
any of them imports prometheus-client (``imggen worker`` and ``imggen api --workers N`` do it).
What is true of the whole deployment (queue depth, jobs by status, live workers) is read from
SQL when the API is scraped, by ``DeploymentCollector``, so it is right whichever process
answers.

Names and labels follow Prometheus' conventions: base units (seconds, bytes), ``_total`` on
counters (added by prometheus-client), labels of bounded values (stage, lane, outcome, model).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

JOBS_SUBMITTED = Counter("imggen_jobs_submitted", "Jobs accepted, by lane.", ["lane"])
JOBS_FINISHED = Counter(
    "imggen_jobs_finished", "Jobs that ended, by outcome and lane.", ["outcome", "lane"]
)
STAGE_DURATION = Histogram(
    "imggen_stage_duration_seconds",
    "Time a stage run took in a worker (a batched run counts once), by stage and model.",
    ["stage", "model"],
    buckets=_SECONDS,
)
STAGE_RUNS = Counter(
    "imggen_stage_runs",
    "Stage runs, by stage and outcome (succeeded, failed, retrying, aborted, yielded).",
    ["stage", "outcome"],
)
DENOISE_BATCH_IMAGES = Histogram(
    "imggen_denoise_batch_images",
    "Images denoised together in one batch.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
DENOISE_BATCH_JOBS = Histogram(
    "imggen_denoise_batch_jobs",
    "Jobs denoised together in one batch.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)
CACHE_HITS = Counter("imggen_cache_hits", "Latent cache hits, by kind.", ["kind"])
UNET_STEPS = Counter("imggen_unet_steps", "UNet steps run (per image).")
UNET_STEPS_SAVED = Counter("imggen_unet_steps_saved", "UNet steps the latent caches saved.")
MODEL_LOAD = Histogram(
    "imggen_model_load_seconds",
    "Time a worker took to load a model, by model folder name.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
WEBHOOK_DELIVERIES = Counter(
    "imggen_webhook_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retrying, gave_up).",
    ["outcome"],
)
LEASE_TAKEOVERS = Counter(
    "imggen_lease_takeovers", "Stage runs taken over from a lost worker, by stage.", ["stage"]
)
GPU_MEMORY = Gauge(
    "imggen_gpu_memory_allocated_bytes",
    "Accelerator memory torch holds in a worker process after its last stage.",
    ["device"],
    multiprocess_mode="liveall",
)
GPU_MEMORY_PEAK = Gauge(
    "imggen_gpu_memory_peak_bytes",
    "Most accelerator memory torch held in a worker process during its last stage.",
    ["device"],
    multiprocess_mode="liveall",
)


def after_commit(session: Session, count: Callable[[], None]) -> None:
    """Count once ``session``'s transaction commits (a rolled-back one counts nothing)."""
    event.listen(session, "after_commit", lambda _session: count(), once=True)


def exposition(*collectors: Collector) -> bytes:
    """The text a scrape reads: every process's values in multiprocess mode (this process's
    otherwise), then ``collectors``'."""
    if os.environ.get(MULTIPROC_ENV):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    extra = CollectorRegistry()
    for collector in collectors:
        extra.register(collector)
    return generate_latest(processes) + generate_latest(extra)


def multiprocess_dir(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with a fresh multiprocess folder, unless it names one already."""
    if environ.get(MULTIPROC_ENV):
        return environ
    return {**environ, MULTIPROC_ENV: tempfile.mkdtemp(prefix="imggen-metrics-")}


def process_exited(pid: int) -> None:
    """Drop a finished process's live gauges (its counters stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


class DeploymentCollector(Collector):
    """Gauges read from SQL at each scrape: queue depth, running stages, jobs, live workers."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Any]:
        from producer import overview
        from producer.db import in_transaction

        def read(session: Session) -> tuple[Any, ...]:
            return (
                overview.queue_depth(session),
                overview.running_by_stage(session),
                overview.job_counts(session),
                overview.workers(session),
            )

        depth, running, jobs, workers = in_transaction(self.database_url, read)
        yield _by_lane("imggen_queue_depth", "Stage runs waiting to be claimed.", "stage", depth)
        busy = GaugeMetricFamily(
            "imggen_stage_runs_running", "Stage runs a worker holds now.", labels=["stage"]
        )
        for stage, count in running.items():
            busy.add_metric([stage], count)
        yield busy
        yield _by_lane("imggen_jobs", "Jobs in SQL, by status and lane.", "status", jobs)
        alive = sum(1 for worker in workers if worker["alive"])
        yield GaugeMetricFamily(
            "imggen_worker_processes_alive", "Worker processes heard from lately.", value=alive
        )


def _by_lane(
    name: str, documentation: str, label: str, counts: dict[str, dict[str, int]]
) -> GaugeMetricFamily:
    """A gauge of ``counts`` (``label`` value -> lane -> count), labelled ``label`` and lane."""
    family = GaugeMetricFamily(name, documentation, labels=[label, "lane"])
    for value, lanes in counts.items():
        for lane, count in lanes.items():
            family.add_metric([value, lane], count)
    return family
