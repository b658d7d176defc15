"""Table 1 and 1a: the queue's overhead against a hand-written loop over the same model.

This machine's speed changes by 10-30% from one stretch of seconds to the next, more than the
overhead to measure. So each short round runs the same jobs every way back to back, in a random
order, each path's ratio is taken within its round, and the table gives the median of the
rounds' ratios with a 95% confidence interval. The direct loop runs twice per round: the queue
is compared with the mean of the two runs, and the first run over the second is a control that
shows the noise left. The workers stay up between rounds (idle, a worker waits on its broker
without using the CPU), each on its own database and Redis database.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imggen
from bench.common import (
    BASE_PROMPTS,
    Table,
    cluster,
    median_interval,
    queue_wall,
    read_jobs,
    run_jobs,
)
from producer.pipeline import STAGES
from testbed.cluster import Cluster
from testbed.services import postgres_database

DIRECT = "direct loop"
CONTROL = "direct loop, its first run over its second (noise control)"
PATHS = (  # label, IMGGEN_BATCH_MAX_IMAGES, IMGGEN_CHAIN_STAGES
    ("queue, batching off", "1", "true"),
    ("queue, batching on", "8", "true"),
    ("queue, batching on, chaining off: every stage a message", "8", "false"),
)
SPEC: dict[str, Any] = {"n": 2, "steps": 25, "width": 256, "height": 256, "guidance": 7.5}


@dataclass
class Overhead:
    jobs: int  # per round
    rounds: int
    walls: dict[str, list[float]]  # by path: seconds per round
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # path, stage
    outside_ms: dict[str, list[float]] = field(default_factory=dict)  # path: per job


def measure(root: Path, model: Path, redis_url: str, jobs: int, rounds: int) -> Overhead:
    specs: list[dict[str, Any]] = [
        {"prompt": f"{BASE_PROMPTS[i % 10]} {i}", "seed": i} | SPEC for i in range(jobs)
    ]
    order = random.Random(jobs)
    direct_loop = _direct_loop(model, root / f"direct-{jobs}")
    result = Overhead(jobs, rounds, {DIRECT: [], CONTROL: []})
    with contextlib.ExitStack() as stack:
        clusters: dict[str, Cluster] = {}
        for number, (label, batch_images, chain) in enumerate(PATHS, start=1):
            queue = cluster(
                root,
                f"overhead-{jobs}-{number}",
                model,
                f"{redis_url.rsplit('/', 1)[0]}/{number}",
                stack.enter_context(postgres_database()),
                batch_max_images=batch_images,
                chain_stages=chain,
                exact_cache="false",
            )
            queue.start_worker(concurrency=1)
            stack.callback(queue.stop)
            run_jobs(queue, [specs[0] | {"seed": 10_000}])  # worker start-up and model load
            clusters[label] = queue
            result.walls[label], result.stage_seconds[label], result.outside_ms[label] = [], {}, []
        for round_ in range(rounds):
            batch = [s | {"seed": s["seed"] + 1000 * (round_ + 1)} for s in specs]
            for label in order.sample(list(result.walls), len(result.walls)):
                if label in (DIRECT, CONTROL):
                    result.walls[label].append(direct_loop(batch))
                    continue
                wall, ids = queue_wall(clusters[label], batch)
                result.walls[label].append(wall)
                _add_stage_times(result, label, clusters[label], ids)
    return result


def _direct_loop(model: Path, saved: Path) -> Any:
    """What a hand-written script over imggen does, saving its images."""
    parts = imggen.load_components(model, "cpu")
    imggen.denoise(
        parts, imggen.encode_prompt(parts, "warm up"), seeds=[0], steps=2, height=64, width=64
    )
    saved.mkdir(exist_ok=True)

    def run(batch: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        for job in batch:
            prompt = imggen.expand(job["prompt"]).prompt
            embeddings = imggen.encode_prompt(parts, prompt)
            seeds = [job["seed"], job["seed"] + 1]
            latents = imggen.denoise(
                parts, embeddings, seeds=seeds, steps=25, height=256, width=256
            )
            for seed, image in zip(seeds, imggen.decode(parts, latents), strict=True):
                (saved / f"{seed}.png").write_bytes(imggen.png_bytes(image))
                imggen.score(image)
        return time.perf_counter() - started

    return run


def _add_stage_times(result: Overhead, label: str, queue: Cluster, ids: list[str]) -> None:
    """Seconds inside each stage (claim to commit), and per job the milliseconds from its
    submission to its end spent outside every stage: the queue's hand-offs."""
    for job in read_jobs(queue, ids):
        assert job.finished_at is not None
        for run in job.stage_runs:
            seconds = result.stage_seconds[label]
            seconds[run.stage] = seconds.get(run.stage, 0.0) + (run.duration_s or 0.0)
        inside = sum(run.duration_s or 0.0 for run in job.stage_runs)
        total = (job.finished_at - job.created_at).total_seconds()
        result.outside_ms[label].append(1000 * (total - inside))


def table(result: Overhead, section: str) -> Table:
    jobs, total = result.jobs, result.jobs * result.rounds
    title = (
        f"{section}. Queue overhead: {result.rounds} paired rounds of {jobs} "
        f"{'job' if jobs == 1 else 'jobs submitted at once'} (256x256, 25 steps, 2 images each), "
        "one worker process"
    )
    columns = ["path:", "jobs/s", "vs direct loop: median of rounds", "95% CI"]
    columns += ["expand ms/job", "encode", "denoise", "decode", "score", "outside stages ms/job"]
    walls = result.walls
    baseline = [(a + b) / 2 for a, b in zip(walls[DIRECT], walls[CONTROL], strict=True)]
    rows = [
        ["direct in-process loop, two runs a round (the baseline)", f"{total / sum(baseline):.2f}"]
        + ["1"]
        + [""] * 7
    ]
    for label, times in walls.items():
        if label == DIRECT:
            continue
        reference = walls[DIRECT] if label == CONTROL else baseline
        ratios = sorted(d / t for d, t in zip(reference, times, strict=True))
        low, high = median_interval(ratios)
        stages = result.stage_seconds.get(label)
        cells = [f"{1000 * stages.get(s, 0) / total:.0f}" if stages else "" for s in STAGES]
        gaps = ""
        if label in result.outside_ms and jobs == 1:  # with several jobs it includes waiting
            ordered = sorted(result.outside_ms[label])
            gap_low, gap_high = median_interval(ordered)
            gaps = f"{statistics.median(ordered):.0f} ({gap_low:.0f}-{gap_high:.0f})"
        rows.append(
            [label, f"{total / sum(times):.2f}", f"{statistics.median(ratios):.3f}"]
            + [f"{low:.3f}-{high:.3f}", *cells, gaps]
        )
    note = (
        "Ratios within each round: the direct loop's time (the mean of its two runs) over the "
        "path's, above 1 faster than the loop; for the control, the first run's over the "
        "second's. Stage columns: milliseconds from claim to commit per job (a batched denoise "
        "counts once for each job in it). Outside stages (rounds of one job): from submission to "
        "the job's end, the milliseconds not inside a stage (claims, publishes, the broker's "
        "hand-offs), median and its 95% CI."
    )
    return Table(title, columns, rows, note)
