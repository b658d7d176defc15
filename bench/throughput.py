"""Throughput benchmarks, each measured side by side in one run; prints markdown tables.

    python -m bench.throughput [--quick] [--prompts ../shared/data/PartiPrompts.tsv]

1. queue overhead: the same jobs in an in-process loop over imggen vs through Redis + one worker
   (batching off, on, and on with chaining off), one job at a time, and (1a) four submitted at
   once; with each job's time outside its stages;
   1b. bookkeeping: what claim, commit and publish cost per stage and per job, without a worker;
2. batching: denoise throughput with cross-job batching on vs off, 1, 4 and 8 compatible jobs;
3. caches: a workload of repeated and paraphrased prompts, caches off vs on;
4. memory: worker RSS after 50 and after 500 jobs.

Needs redis-server and PostgreSQL (as the chaos bench). Tiny random-weight models, CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import imggen
from imggen.tiny import make_tiny, make_tiny_clip
from migrations import upgrade
from producer.db import in_transaction
from producer.jobs import create_job, get_job
from producer.models import Job, utcnow
from producer.outbox import publish_now
from producer.pipeline import STAGES
from producer.queue import producer_app
from producer.settings import Settings
from producer.spec import validate_spec
from tests.chaos.harness import Cluster
from tests.conftest import RedisServer, postgres_database
from worker.demo import read_prompts
from worker.leases import claim_stage, commit_stage

BASE_PROMPTS = [
    "a lighthouse on a cliff",
    "a red fox in the snow",
    "a bowl of ramen",
    "an astronaut on a horse",
    "a watercolor map of an island",
    "a robot reading a book",
    "a castle at sunset",
    "a cat wearing a hat",
    "a city street in the rain",
    "a forest with a river",
]
PARAPHRASES = ["{p}", "a photo of {p}", "{p}, high detail", "{p}, digital art", "an image of {p}"]


def _cluster(
    root: Path, name: str, model: Path, redis_url: str, database_url: str, **extra: str
) -> Cluster:
    # Production-like clocks: no fault injection here.
    settings = {
        "stage_lease_seconds": "60",
        "sweep_interval_seconds": "2",
        "relay_grace_seconds": "2",
        "requeue_after_seconds": "600",
        "stall_after_seconds": "0",
    }
    return Cluster(root / name, model, database_url, redis_url, **(settings | extra))


def _stage_times(cluster: Cluster, job_ids: Sequence[str]) -> tuple[dict[str, float], list[float]]:
    """Seconds inside each stage (claim to commit), summed over the jobs; and per job, the
    milliseconds from its submission to its end spent outside every stage: the queue's
    hand-offs (alone in the queue, a job waits for nothing else)."""

    def read(session: Any) -> tuple[dict[str, float], list[float]]:
        totals: dict[str, float] = {}
        outside = []
        for job_id in job_ids:
            job = get_job(session, job_id, full=True)
            assert job.finished_at is not None
            for run in job.stage_runs:
                totals[run.stage] = totals.get(run.stage, 0.0) + (run.duration_s or 0.0)
            inside = sum(run.duration_s or 0.0 for run in job.stage_runs)
            outside.append(1000 * ((job.finished_at - job.created_at).total_seconds() - inside))
        return totals, outside

    return in_transaction(cluster.settings.resolved_database_url, read)


def _run_jobs(
    cluster: Cluster, specs: list[dict[str, Any]], poll_s: float = 0.25
) -> tuple[float, list[str]]:
    started = time.perf_counter()
    ids = [cluster.client.submit(**spec).id for spec in specs]
    cluster.drain(ids, 3600, poll_s)
    return time.perf_counter() - started, ids


def _queue_wall(cluster: Cluster, specs: list[dict[str, Any]]) -> tuple[float, list[str]]:
    """Seconds from the first submit to the last job's end, read from the jobs' own records:
    exact, so the bench can look for the end seldom (its queries take CPU from the worker)."""
    started = utcnow()
    _, ids = _run_jobs(cluster, specs, poll_s=1.0)
    ended = in_transaction(
        cluster.settings.resolved_database_url,
        lambda s: s.scalar(select(func.max(Job.finished_at)).where(Job.id.in_(ids))),
    )
    return (ended - started).total_seconds(), ids


def queue_overhead(
    root: Path, model: Path, redis_url: str, jobs: int, rounds: int, section: str
) -> None:
    """The same jobs through a hand-written loop and through the queue, in paired rounds.

    This machine's speed changes by 10-30% from one stretch of seconds to the next, more than
    the overhead to measure. So each short round runs the same ``jobs`` jobs every way back to
    back, in a random order, each path's ratio is taken within its round, and the table gives
    the median of the rounds' ratios with a 95% confidence interval. The direct loop runs twice
    per round: the queue is compared with the mean of the two runs, and the first run over the
    second is a control that shows the noise left. Both workers stay up between rounds (idle,
    a worker waits on its broker without using the CPU), each on its own database and Redis
    database.
    """
    spec = {"n": 2, "steps": 25, "width": 256, "height": 256, "guidance": 7.5}
    specs = [{"prompt": f"{BASE_PROMPTS[i % 10]} {i}", "seed": i} | spec for i in range(jobs)]
    order = random.Random(jobs)

    # The direct loop: what a hand-written script over imggen would do, saving its images.
    parts = imggen.load_components(model, "cpu")
    imggen.denoise(
        parts, imggen.encode_prompt(parts, "warm up"), seeds=[0], steps=2, height=64, width=64
    )
    saved = root / f"direct-{jobs}"
    saved.mkdir(exist_ok=True)

    def direct_loop(batch: list[dict[str, Any]]) -> float:
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

    direct, control = "direct loop", "direct loop, its first run over its second (noise control)"
    walls: dict[str, list[float]] = {direct: [], control: []}
    stages: dict[str, dict[str, float]] = {}
    outside: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        clusters: dict[str, Cluster] = {}
        paths = (
            ("queue, batching off", "1", "true"),
            ("queue, batching on", "8", "true"),
            ("queue, batching on, chaining off: every stage a message", "8", "false"),
        )
        for number, (label, batch_images, chain) in enumerate(paths, start=1):
            cluster = _cluster(
                root,
                f"overhead-{jobs}-{number}",
                model,
                f"{redis_url.rsplit('/', 1)[0]}/{number}",
                stack.enter_context(postgres_database()),
                batch_max_images=batch_images,
                chain_stages=chain,
                exact_cache="false",
            )
            cluster.start_worker(concurrency=1)
            stack.callback(cluster.stop)
            _run_jobs(cluster, [specs[0] | {"seed": 10_000}])  # worker start-up and model load
            clusters[label], walls[label], stages[label], outside[label] = cluster, [], {}, []
        for round_ in range(rounds):
            batch = [s | {"seed": s["seed"] + 1000 * (round_ + 1)} for s in specs]
            for label in order.sample(list(walls), len(walls)):
                if label in (direct, control):
                    walls[label].append(direct_loop(batch))
                    continue
                wall, ids = _queue_wall(clusters[label], batch)
                walls[label].append(wall)
                totals, outside_ms = _stage_times(clusters[label], ids)
                for stage, seconds in totals.items():
                    stages[label][stage] = stages[label].get(stage, 0.0) + seconds
                outside[label] += outside_ms

    total = jobs * rounds
    print(
        f"\n### {section}. Queue overhead: {rounds} paired rounds of {jobs} "
        f"{'job' if jobs == 1 else 'jobs submitted at once'} (256x256, 25 steps, 2 images each), "
        "one worker process\n"
    )
    print(
        "| path | jobs/s | vs direct loop: median of rounds | 95% CI | "
        "expand ms/job | encode | denoise | decode | score | outside stages ms/job |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline = [(a + b) / 2 for a, b in zip(walls[direct], walls[control], strict=True)]
    print(
        f"| direct in-process loop, two runs a round (the baseline) | "
        f"{total / sum(baseline):.2f} | 1 | | | | | | | |"
    )
    for label, times in walls.items():
        if label == direct:
            continue
        reference = walls[direct] if label == control else baseline
        ratios = sorted(d / t for d, t in zip(reference, times, strict=True))
        low, high = _median_interval(ratios)
        cells = " | ".join(
            f"{1000 * stages[label].get(s, 0) / total:.0f}" if label in stages else ""
            for s in STAGES
        )
        gaps = ""
        if label in outside and jobs == 1:  # with several jobs at once it includes waiting
            ordered = sorted(outside[label])
            gap_low, gap_high = _median_interval(ordered)
            gaps = f"{statistics.median(ordered):.0f} ({gap_low:.0f}-{gap_high:.0f})"
        print(
            f"| {label} | {total / sum(times):.2f} | {statistics.median(ratios):.3f} "
            f"| {low:.3f}-{high:.3f} | {cells} | {gaps} |"
        )
    print(
        "\nRatios within each round: the direct loop's time (the mean of its two runs) over the "
        "path's, above 1 faster than the loop; for the control, the first run's over the "
        "second's. Stage columns: milliseconds from claim to commit per job (a batched denoise "
        "counts once for each job in it). Outside stages (rounds of one job): from submission to "
        "the job's end, the milliseconds not inside a stage (claims, publishes, the broker's "
        "hand-offs), median and its 95% CI."
    )


def _median_interval(ordered: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval for the median of ``ordered`` (sorted):
    the order statistics of ranks n/2 -+ 1.96 sqrt(n)/2 (normal approximation of the
    binomial(n, 1/2) count of rounds below the median)."""
    n = len(ordered)
    half_width = 1.96 * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - half_width), math.ceil(1 + n / 2 + half_width)  # 1-based
    return ordered[max(low - 1, 0)], ordered[min(high - 1, n - 1)]


def bookkeeping(root: Path, redis_url: str, jobs: int) -> None:
    """The queue's fixed cost: each stage's claim, commit and publish, run in-process with no
    model and no Celery worker, so the machine's drifting speed for torch does not blur it."""
    times: dict[str, list[float]] = {"claim": [], "commit": [], "publish": []}

    def timed(kind: str, database_url: str, work: Any) -> Any:
        started = time.perf_counter()
        result = in_transaction(database_url, work)
        times[kind].append(time.perf_counter() - started)
        return result

    with postgres_database() as database_url:
        upgrade(database_url)
        settings = Settings(
            home=root / "bookkeeping", database_url=database_url, broker_url=redis_url
        )
        app = producer_app(settings)
        for i in range(jobs):
            spec = validate_spec({"prompt": f"prompt {i}", "seed": i})
            job_id = in_transaction(database_url, partial(create_job, spec=spec, model="m")).id
            for stage in STAGES:
                claim = timed(
                    "claim",
                    database_url,
                    partial(
                        claim_stage, job_id=job_id, stage=stage, lease_seconds=60, max_attempts=3
                    ),
                )
                following = timed(
                    "commit",
                    database_url,
                    partial(commit_stage, job_id=job_id, stage=stage, token=claim.token, output={}),
                )
                if following is not None:
                    started = time.perf_counter()
                    publish_now(database_url, app, job_id, following)
                    times["publish"].append(time.perf_counter() - started)
    medians = {kind: 1000 * statistics.median(values) for kind, values in times.items()}
    per_job = 1000 * sum(sum(values) for values in times.values()) / jobs
    print(
        f"\n### 1b. Bookkeeping: {jobs} jobs x {len(STAGES)} stages, PostgreSQL + Redis, "
        "in-process (no worker, no model); medians per stage\n"
    )
    print("| claim ms | commit ms | publish ms | all five stages, per job ms |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {medians['claim']:.1f} | {medians['commit']:.1f} | {medians['publish']:.1f} "
        f"| {per_job:.0f} |"
    )


def batching(root: Path, model: Path, redis_url: str) -> None:
    spec = {"n": 1, "steps": 20, "width": 128, "height": 128, "guidance": 7.5}
    print(
        "\n### 2. Cross-job batching: K compatible jobs submitted at once; a worker for the light"
    )
    print("stages and one for denoise (the production layout); wall time until all finished\n")
    print(
        "| concurrent jobs | batching off s | batching on s | speed-up | mean jobs per denoise batch |"
    )
    print("|---:|---:|---:|---:|---:|")
    light = ["imggen.expand", "imggen.encode", "imggen.decode", "imggen.score"]
    for count in (1, 4, 8):
        walls, batch_sizes = {}, []
        for batch in ("1", "8"):
            with postgres_database() as database_url:
                cluster = _cluster(
                    root,
                    f"batch-{count}-{batch}",
                    model,
                    redis_url,
                    database_url,
                    batch_max_images=batch,
                    exact_cache="false",
                )
                cluster.start_worker(concurrency=1, queues=light)
                cluster.start_worker(concurrency=1, queues=["imggen.denoise"])
                _run_jobs(cluster, [{"prompt": "warm up", "seed": 999} | spec])
                timings = []
                for repeat in range(5):
                    specs = [
                        {"prompt": f"{BASE_PROMPTS[i]} {repeat}", "seed": i} | spec
                        for i in range(count)
                    ]
                    wall, ids = _run_jobs(cluster, specs)
                    timings.append(wall)
                    if batch == "8":
                        batch_sizes += _batch_sizes(cluster, ids)
                cluster.stop()
            walls[batch] = statistics.median(timings)
        mean_batch = statistics.mean(batch_sizes) if batch_sizes else 1
        print(
            f"| {count} | {walls['1']:.2f} | {walls['8']:.2f} | {walls['1'] / walls['8']:.2f} | {mean_batch:.1f} |"
        )


def _batch_sizes(cluster: Cluster, ids: Sequence[str]) -> list[int]:
    def read(session: Any) -> list[int]:
        sizes = []
        for job_id in ids:
            run = next(
                r for r in get_job(session, job_id, full=True).stage_runs if r.stage == "denoise"
            )
            sizes.append(int((run.output or {}).get("cache", {}).get("batch_jobs", 1)))
        return sizes

    return in_transaction(cluster.settings.resolved_database_url, read)


def caches(
    root: Path, model: Path, clip_dir: Path, redis_url: str, prompts: list[str], jobs: int
) -> None:
    rng = random.Random(7)
    workload: list[dict[str, Any]] = []
    for _ in range(jobs):
        if workload and rng.random() < 0.3:
            workload.append(dict(rng.choice(workload)))  # a resubmission: same prompt, same seed
        else:
            base = rng.choice(prompts)
            workload.append(
                {"prompt": rng.choice(PARAPHRASES).format(p=base), "seed": rng.randrange(10**6)}
            )
    shape = {"n": 1, "steps": 20, "width": 64, "height": 64, "guidance": 7.5}
    results = {}
    for label, extra in (
        ("caches off", {"exact_cache": "false"}),
        ("exact cache", {}),
        ("exact + semantic cache", {"semantic_cache": "true"}),
    ):
        with postgres_database() as database_url:
            cluster = _cluster(
                root,
                f"cache-{len(results)}",
                model,
                redis_url,
                database_url,
                clip_model=str(clip_dir),
                **extra,
            )
            cluster.start_worker(concurrency=1)
            wall, ids = _run_jobs(cluster, [job | shape for job in workload])
            results[label] = (wall, _cache_records(cluster, ids))
            cluster.stop()

    baseline = results["caches off"][1]
    print(
        f"\n### 3. Caches: {jobs} jobs ({len(prompts)} base prompts, 5 phrasings, 30% resubmitted), "
        "64x64, 20 steps\n"
    )
    print(
        "| caches | wall s | UNet steps | saved | exact hits | semantic hits | mean skipped on a semantic hit "
        "| mean abs change in sharpness / entropy / clip_score vs off |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    total = sum(r["unet_steps"] for r in baseline)
    for label, (wall, records) in results.items():
        steps = sum(r["unet_steps"] for r in records)
        exact = sum(r["exact_hits"] for r in records)
        semantic = [r for r in records if r["semantic_hits"]]
        skipped = statistics.mean([max(r["skipped_steps"]) for r in semantic]) if semantic else 0
        changes = " / ".join(
            f"{statistics.mean(abs(a['metrics'][m] - b['metrics'][m]) for a, b in zip(records, baseline, strict=True)):.4f}"
            for m in ("sharpness", "entropy", "clip_score")
        )
        print(
            f"| {label} | {wall:.1f} | {steps} | {1 - steps / total:.0%} | {exact} | {len(semantic)} "
            f"| {skipped:.1f} | {changes} |"
        )


def _cache_records(cluster: Cluster, ids: Sequence[str]) -> list[dict[str, Any]]:
    def read(session: Any) -> list[dict[str, Any]]:
        records = []
        for job_id in ids:
            job = get_job(session, job_id, full=True)
            run = next(r for r in job.stage_runs if r.stage == "denoise")
            record = dict((run.output or {}).get("cache", {}))
            record["metrics"] = {m.name: m.value for m in job.images[0].metrics}
            records.append(record)
        return records

    return in_transaction(cluster.settings.resolved_database_url, read)


def memory(root: Path, model: Path, redis_url: str, jobs: int) -> None:
    spec = {"n": 1, "steps": 4, "width": 64, "height": 64}
    with postgres_database() as database_url:
        cluster = _cluster(root, "memory", model, redis_url, database_url, exact_cache="false")
        worker = cluster.start_worker(concurrency=1)
        readings = []
        done = 0
        for target in (50, jobs):
            _run_jobs(
                cluster, [{"prompt": f"job {i}", "seed": i} | spec for i in range(done, target)]
            )
            done = target
            readings.append((target, _rss_mb(worker.pid)))
        cluster.stop()
    print(f"\n### 4. Worker memory (RSS of the worker and its pool process), {jobs} small jobs\n")
    print("| after jobs | RSS MiB |\n|---:|---:|")
    for count, rss in readings:
        print(f"| {count} | {rss:.0f} |")
    print(
        f"\ngrowth from {readings[0][0]} to {readings[-1][0]} jobs: {readings[-1][1] - readings[0][1]:+.0f} MiB"
    )


def _rss_mb(pid: int) -> float:
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--prompts", type=Path, help="prompt file for the cache workload (TSV or text)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated: overhead,bookkeeping,batching,caches,memory"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    everything = {"overhead", "bookkeeping", "batching", "caches", "memory"}
    only = set(args.only.split(",")) if args.only else everything
    prompts = read_prompts(args.prompts, 40) if args.prompts else BASE_PROMPTS
    print(
        f"# imggen throughput, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, tiny random-weight models"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, clip_dir = make_tiny(root / "model"), make_tiny_clip(root / "clip")
        redis = RedisServer(root)
        redis.start()
        try:
            if "overhead" in only:
                for section, jobs, rounds in (("1", 1, 60), ("1a", 4, 30)):
                    rounds = 2 if args.quick else rounds
                    queue_overhead(root, model, redis.url, jobs, rounds, section)
            if "bookkeeping" in only:
                bookkeeping(root, redis.url, jobs=10 if args.quick else 60)
            if "batching" in only:
                batching(root, model, redis.url)
            if "caches" in only:
                caches(root, model, clip_dir, redis.url, prompts, jobs=40 if args.quick else 300)
            if "memory" in only:
                memory(root, model, redis.url, jobs=60 if args.quick else 500)
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
