"""Table 4: a worker's resident memory (its main and pool process) after 50 and after N jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.common import Table, cluster, run_jobs
from testbed.services import postgres_database


@dataclass
class Memory:
    readings: list[tuple[int, float]]  # (jobs done, RSS MiB)


def measure(root: Path, model: Path, redis_url: str, jobs: int) -> Memory:
    spec = {"n": 1, "steps": 4, "width": 64, "height": 64}
    with postgres_database() as database_url:
        queue = cluster(root, "memory", model, redis_url, database_url, exact_cache="false")
        worker = queue.start_worker(concurrency=1)
        readings, done = [], 0
        for target in (50, jobs):
            run_jobs(queue, [{"prompt": f"job {i}", "seed": i} | spec for i in range(done, target)])
            done = target
            readings.append((target, rss_mb(worker.pid)))
        queue.stop()
    return Memory(readings)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MiB (Linux /proc)."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def table(result: Memory) -> Table:
    (first, low), (last, high) = result.readings[0], result.readings[-1]
    return Table(
        f"4. Worker memory (RSS of the worker and its pool process), {last} small jobs",
        ["after jobs", "RSS MiB"],
        [[str(count), f"{rss:.0f}"] for count, rss in result.readings],
        footer=[f"\ngrowth from {first} to {last} jobs: {high - low:+.0f} MiB"],
    )
