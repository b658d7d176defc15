"""Table 2: cross-job batching. K compatible jobs submitted at once to a worker for the light
stages and one for denoise (the production layout), batching off and on; wall time until all
finished, median of 5."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BASE_PROMPTS, Table, cluster, denoise_output, read_jobs, run_jobs
from testbed.services import postgres_database

SPEC: dict[str, Any] = {"n": 1, "steps": 20, "width": 128, "height": 128, "guidance": 7.5}
LIGHT = ["imggen.expand", "imggen.encode", "imggen.decode", "imggen.score"]


@dataclass
class BatchingRow:
    jobs: int
    off_s: float
    on_s: float
    mean_batch_jobs: float


def measure(
    root: Path, model: Path, redis_url: str, counts: tuple[int, ...] = (1, 4, 8)
) -> list[BatchingRow]:
    rows = []
    for count in counts:
        walls, batch_sizes = {}, []
        for batch in ("1", "8"):
            with postgres_database() as database_url:
                queue = cluster(
                    root,
                    f"batch-{count}-{batch}",
                    model,
                    redis_url,
                    database_url,
                    batch_max_images=batch,
                    exact_cache="false",
                )
                queue.start_worker(concurrency=1, queues=LIGHT)
                queue.start_worker(concurrency=1, queues=["imggen.denoise"])
                run_jobs(queue, [{"prompt": "warm up", "seed": 999} | SPEC])
                timings = []
                for repeat in range(5):
                    specs = [
                        {"prompt": f"{BASE_PROMPTS[i]} {repeat}", "seed": i} | SPEC
                        for i in range(count)
                    ]
                    wall, ids = run_jobs(queue, specs)
                    timings.append(wall)
                    if batch == "8":
                        jobs = read_jobs(queue, ids)
                        batch_sizes += [denoise_output(job).cache.batch_jobs for job in jobs]
                queue.stop()
            walls[batch] = statistics.median(timings)
        mean_batch = statistics.mean(batch_sizes) if batch_sizes else 1.0
        rows.append(BatchingRow(count, walls["1"], walls["8"], mean_batch))
    return rows


def table(rows: list[BatchingRow]) -> Table:
    title = (
        "2. Cross-job batching: K compatible jobs submitted at once; a worker for the light "
        "stages and one for denoise (the production layout); wall time until all finished"
    )
    columns = ["concurrent jobs", "batching off s", "batching on s", "speed-up"]
    columns.append("mean jobs per denoise batch")
    cells = [
        [str(r.jobs), f"{r.off_s:.2f}", f"{r.on_s:.2f}", f"{r.off_s / r.on_s:.2f}"]
        + [f"{r.mean_batch_jobs:.1f}"]
        for r in rows
    ]
    return Table(title, columns, cells)
