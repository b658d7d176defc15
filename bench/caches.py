"""Table 3: the exact and semantic caches on a workload of paraphrased and resubmitted prompts:
UNet steps saved, hits, and how much the images' metrics moved against caches off."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PARAPHRASES, Table, cluster, denoise_output, read_jobs, run_jobs
from producer.stage_outputs import CacheRecord
from testbed.services import postgres_database

SHAPE: dict[str, Any] = {"n": 1, "steps": 20, "width": 64, "height": 64, "guidance": 7.5}
SETTINGS: tuple[tuple[str, dict[str, str]], ...] = (
    ("caches off", {"exact_cache": "false"}),
    ("exact cache", {}),
    ("exact + semantic cache", {"semantic_cache": "true"}),
)
METRICS = ("sharpness", "entropy", "clip_score")


@dataclass
class JobRecord:
    cache: CacheRecord
    metrics: dict[str, float]  # the first image's


@dataclass
class CacheRun:
    label: str
    wall_s: float
    jobs: list[JobRecord]


@dataclass
class Caches:
    prompts: int
    runs: list[CacheRun]


def workload(prompts: list[str], jobs: int) -> list[dict[str, Any]]:
    """Paraphrases of ``prompts``, with 30% resubmissions (same prompt, same seed)."""
    rng = random.Random(7)
    specs: list[dict[str, Any]] = []
    for _ in range(jobs):
        if specs and rng.random() < 0.3:
            specs.append(dict(rng.choice(specs)))
        else:
            base = rng.choice(prompts)
            specs.append(
                {"prompt": rng.choice(PARAPHRASES).format(p=base), "seed": rng.randrange(10**6)}
            )
    return [spec | SHAPE for spec in specs]


def measure(
    root: Path, model: Path, clip_dir: Path, redis_url: str, prompts: list[str], jobs: int
) -> Caches:
    specs, runs = workload(prompts, jobs), []
    for number, (label, extra) in enumerate(SETTINGS):
        with postgres_database() as database_url:
            queue = cluster(
                root,
                f"cache-{number}",
                model,
                redis_url,
                database_url,
                clip_model=str(clip_dir),
                **extra,
            )
            queue.start_worker(concurrency=1)
            wall, ids = run_jobs(queue, specs)
            records = [
                JobRecord(
                    denoise_output(job).cache, {m.name: m.value for m in job.images[0].metrics}
                )
                for job in read_jobs(queue, ids)
            ]
            runs.append(CacheRun(label, wall, records))
            queue.stop()
    return Caches(len(prompts), runs)


def table(result: Caches) -> Table:
    baseline = result.runs[0].jobs
    jobs = len(baseline)
    title = (
        f"3. Caches: {jobs} jobs ({result.prompts} base prompts, 5 phrasings, 30% resubmitted), "
        "64x64, 20 steps"
    )
    columns = ["caches:", "wall s", "UNet steps", "saved", "exact hits", "semantic hits"]
    columns += ["mean skipped on a semantic hit"]
    columns += ["mean abs change in sharpness / entropy / clip_score vs off:"]
    total = sum(r.cache.unet_steps for r in baseline)
    rows = []
    for run in result.runs:
        steps = sum(r.cache.unet_steps for r in run.jobs)
        exact = sum(r.cache.exact_hits for r in run.jobs)
        semantic = [r for r in run.jobs if r.cache.semantic_hits]
        skipped = statistics.mean([max(r.cache.skipped_steps) for r in semantic]) if semantic else 0
        changes = " / ".join(
            f"{statistics.mean(abs(a.metrics[m] - b.metrics[m]) for a, b in zip(run.jobs, baseline, strict=True)):.4f}"
            for m in METRICS
        )
        rows.append(
            [run.label, f"{run.wall_s:.1f}", str(steps), f"{1 - steps / total:.0%}", str(exact)]
            + [str(len(semantic)), f"{skipped:.1f}", changes]
        )
    return Table(title, columns, rows)
