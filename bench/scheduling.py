"""Scheduling: imggen against a plain diffusers loop over the same model folder, side by side.

    python -m bench.scheduling [--jobs 48] [--backlog 300] [--quick] [--latency-only]
                               [--rounds-only] [--torch-compile]

1. bulk throughput: the same bulk jobs through one default worker (every queue, concurrency 1)
   on Redis + PostgreSQL and on the embedded default, against a ``StableDiffusionPipeline`` loop
   at 1 job a call and at 4 jobs a call (same prompts, seeds, steps, size; PNGs written);
2. interactive latency under a bulk backlog: an interactive job's end-to-end time while the
   backlog is queued, against the same job alone (p50, p95);
3. one job at a time through ``submit().wait()``, against the 1-job-a-call loop;
4. submissions: jobs a second into PostgreSQL + Redis, ``Client.submit`` in a loop and one
   10,000-row batch.

Tables 1 and 3 run in paired rounds: this machine's speed moves 10-30% from one minute to the
next, more than the differences to measure. In each round the loop runs before and after the
queue's paths (both workers stay up, idle, between rounds), each path is compared with the mean
of the loop's two runs around it, and the tables give the median of the rounds' ratios with
their range.

The model: the shapes model imggen ships (64x64, 25 steps, 2 images a job, guidance 4).

``--torch-compile`` runs the workers with ``IMGGEN_TORCH_COMPILE=true`` and adds the loop a
user would write with the same wrapping (``pipe.unet = torch.compile(pipe.unet)``) to table 1;
the ratios stay against the plain loop. Each compiles at warm-up, before anything is timed.
``--rounds-only`` runs tables 1 and 3 alone.

One module, over 300 lines: the four tables share one pair of deployments and their helpers,
and run as one command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.common import Table, cluster, denoise_output, print_table, read_jobs
from imggen.shapes import PRETRAINED
from producer import batches
from producer.db import in_transaction
from producer.models import Job, utcnow
from producer.pipeline import STAGES
from producer.settings import Settings
from testbed.cluster import Cluster
from testbed.deployments import embedded, with_worker
from testbed.services import RedisServer, postgres_database

POLL = str(Settings.model_fields["broker_polling_interval"].default)
SHAPE: dict[str, Any] = {"n": 2, "steps": 25, "width": 64, "height": 64, "guidance": 4.0}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "cross"]


def prompts(count: int) -> list[str]:
    return [
        f"a {COLOURS[i % 8]} {SHAPES[i // 8 % 4]} on a {COLOURS[(i + 3) % 8]} background"
        for i in range(count)
    ]


@dataclass
class Throughput:
    label: str
    jobs: int
    seconds: float
    stage_ms: dict[str, float] = field(default_factory=dict)  # per job, claim to commit
    batch_jobs: float | None = None  # jobs per denoise batch

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


def plain_loop(
    model: Path, texts: list[str], per_call: int, out: Path, compile_unet: bool = False
) -> Throughput:
    """What a short script does: one pipeline, ``per_call`` jobs (2 images each) a call."""
    pipe = StableDiffusionPipeline.from_pretrained(
        model, local_files_only=True, use_safetensors=True, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    # Warm up at the calls' own shape (what torch.compile compiles for).
    warm = {"num_images_per_prompt": 2, "height": SHAPE["height"], "width": SHAPE["width"]}
    pipe(texts[:per_call], num_inference_steps=2, **warm)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for first in range(0, len(texts), per_call):
        batch = texts[first : first + per_call]
        seeds = [seed for i in range(len(batch)) for seed in (first + i, first + i + 1000)]
        images = pipe(
            batch,
            num_images_per_prompt=2,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            num_inference_steps=SHAPE["steps"],
            height=SHAPE["height"],
            width=SHAPE["width"],
            guidance_scale=SHAPE["guidance"],
        ).images
        for seed, image in zip(seeds, images, strict=True):
            image.save(out / f"{seed}.png")
    label = f"plain diffusers loop, {per_call} job{'s' if per_call > 1 else ''} a call"
    label += ", UNet in torch.compile" if compile_unet else ""
    return Throughput(label, len(texts), time.perf_counter() - started)


def through_queue(label: str, queue: Any, texts: list[str], seed: int) -> Throughput:
    """``texts`` submitted at once as one batch (the bulk lane) and followed as ``imggen bulk``
    follows it (its counts once a second), from the submission to the last job's end."""
    started = utcnow()
    rows = [{"prompt": text, "seed": seed + i} for i, text in enumerate(texts)]
    batch_id = queue.client.submit_batch(rows, name=f"bench-{seed}", **SHAPE)
    view = queue.client.wait_batch(batch_id, timeout=3600)
    assert view["counts"]["succeeded"] == len(texts), view

    def ended(session: Session) -> tuple[list[str], datetime]:
        ids = session.scalars(select(Job.id).where(Job.batch_id == batch_id)).all()
        last = session.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == batch_id))
        assert last is not None
        return list(ids), last

    ids, last = in_transaction(queue.settings.resolved_database_url, ended)
    # The last job's own end, not the watcher's next look (up to a second later).
    return _measured(label, queue, ids, (_aware(last) - started).total_seconds())


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; imggen stores UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def one_at_a_time(label: str, queue: Any, texts: list[str], seed: int) -> Throughput:
    """Each of ``texts`` submitted once the one before has ended."""
    started, ids = time.perf_counter(), []
    for i, text in enumerate(texts):
        handle = queue.client.submit(text, seed=seed + i, **SHAPE)
        assert handle.wait(timeout=600)["status"] == "succeeded"
        ids.append(handle.id)
    return _measured(label, queue, ids, time.perf_counter() - started)


def _measured(label: str, queue: Any, ids: list[str], seconds: float) -> Throughput:
    jobs = read_jobs(queue, ids)
    stage_ms: dict[str, float] = {}
    for job in jobs:
        for run in job.stage_runs:
            stage_ms[run.stage] = stage_ms.get(run.stage, 0.0) + 1000 * (run.duration_s or 0.0)
    sizes = [denoise_output(job).cache.batch_jobs for job in jobs]
    per_batch = len(sizes) / sum(1 / size for size in sizes)
    per_job = {stage: ms / len(jobs) for stage, ms in stage_ms.items()}
    return Throughput(label, len(ids), seconds, per_job, per_batch)


@dataclass
class Latency:
    alone_s: list[float]
    under_bulk_s: list[float]
    backlog: int


def interactive_latency(queue: Cluster, backlog: int, samples: int) -> Latency:
    def one(seed: int) -> float:
        started = time.perf_counter()
        handle = queue.client.submit("a red circle on a white background", seed=seed, **SHAPE)
        assert handle.wait(timeout=600)["status"] == "succeeded"
        return time.perf_counter() - started

    alone = [one(10_000 + i) for i in range(samples)]
    rows = [{"prompt": text, "seed": 20_000 + i} for i, text in enumerate(prompts(backlog))]
    backlog_id = queue.client.submit_batch(rows, name="backlog", **SHAPE)
    under = [one(30_000 + i) for i in range(samples)]
    queue.client.wait_batch(backlog_id, timeout=3600)
    return Latency(alone, under, backlog)


def submission_rates(queue: Cluster, count: int, batch_rows: int) -> list[Throughput]:
    """Jobs a second into PostgreSQL + Redis: one ``Client.submit`` a job, and one batch."""
    queue.stop()  # nothing consumes: only the producer side is timed
    started = time.perf_counter()
    for i, text in enumerate(prompts(count)):
        queue.client.submit(text, seed=i, lane="bulk", **SHAPE)
    label = f"Client.submit in a loop, {count} jobs"
    loop = Throughput(label, count, time.perf_counter() - started)
    rows = [(i, {"prompt": text, "seed": i}) for i, text in enumerate(prompts(batch_rows), 1)]
    started = time.perf_counter()
    done = batches.submit(queue.client, "bench", rows, defaults=SHAPE)
    assert done.submitted == batch_rows
    label = f"one batch (imggen bulk, Client.submit_batch), {batch_rows} rows"
    return [loop, Throughput(label, batch_rows, time.perf_counter() - started)]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


@dataclass
class Paired:
    """One path's runs over the rounds, each with the reference loop's rate around it."""

    runs: list[Throughput] = field(default_factory=list)
    references: list[float] = field(default_factory=list)  # jobs/s of the loop, that round

    def ratios(self) -> list[float]:
        return sorted(r.jobs_per_s / ref for r, ref in zip(self.runs, self.references, strict=True))


def _paired_row(path: Paired) -> list[str]:
    runs, ratios = path.runs, path.ratios()
    last = runs[-1]
    sizes = [r.batch_jobs for r in runs if r.batch_jobs is not None]
    stages = [
        f"{statistics.median(r.stage_ms[s] for r in runs):.0f}" if s in last.stage_ms else ""
        for s in STAGES
    ]
    spread = f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return [
        last.label,
        f"{statistics.median(r.jobs_per_s for r in runs):.2f}",
        f"{statistics.median(ratios):.2f}{spread}",
        f"{statistics.median(sizes):.1f}" if sizes else "",
        *stages,
    ]


def tables(
    throughput: list[Paired],
    single: list[Paired],
    rounds: int,
    latency: Latency | None = None,
    submits: list[Throughput] | None = None,
) -> list[Table]:
    """Tables 1 and 3, and 2 and 4 where they were measured."""
    columns = ["path:", "jobs/s", "vs the loop", "jobs a denoise batch"]
    columns += [f"{stage} ms/job" for stage in STAGES]
    bulk = Table(
        f"1. Bulk throughput, {throughput[0].runs[0].jobs} jobs (64x64, 25 steps, 2 images), one "
        f"worker; median of {rounds} paired rounds (range)",
        [c.replace("the loop", "the 4-jobs-a-call loop") for c in columns],
        [_paired_row(path) for path in throughput],
    )
    one = Table(
        f"3. One job at a time, {single[0].runs[0].jobs} jobs; median of {rounds} paired rounds "
        "(range)",
        [c.replace("the loop", "the 1-job-a-call loop") for c in columns],
        [_paired_row(path) for path in single],
    )
    if latency is None or submits is None:
        return [bulk, one]
    rate = Table(
        "4. Submissions into PostgreSQL + Redis",
        ["path:", "jobs", "seconds", "jobs/s"],
        [[t.label, str(t.jobs), f"{t.seconds:.1f}", f"{t.jobs_per_s:.0f}"] for t in submits],
    )
    return [bulk, latency_table(latency), one, rate]


def latency_table(latency: Latency) -> Table:
    alone, under = latency.alone_s, latency.under_bulk_s
    return Table(
        f"2. An interactive job's end-to-end time, alone and with {latency.backlog} bulk jobs "
        "queued ahead of it",
        ["", "p50 s", "p95 s", "p95 vs alone"],
        [
            ["alone", f"{statistics.median(alone):.2f}", f"{_p95(alone):.2f}", "1.00"],
            [
                "under the bulk backlog",
                f"{statistics.median(under):.2f}",
                f"{_p95(under):.2f}",
                f"{_p95(under) / _p95(alone):.2f}",
            ],
        ],
    )


@contextlib.contextmanager
def _redis(root: Path) -> Iterator[str]:
    server = RedisServer(root)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Round:
    """Where each path of tables 1 and 3 runs: the two deployments, each with its worker up."""

    queues: dict[str, Any]  # where -> cluster or deployment
    model: Path
    root: Path
    bulk: list[str]
    single: list[str]
    compile_unet: bool = False  # the workers compile; the loop is also run compiled


def one_round(
    n: int, where: Round, throughput: dict[str, Paired], single: dict[str, Paired]
) -> None:
    """Each path once, between two runs of the loop it is compared with (seeds no other round
    uses: no cache hit)."""
    root = where.root / f"round-{n}"
    before = plain_loop(where.model, where.bulk, 4, root / "loop-4-before")
    one_before = plain_loop(where.model, where.single, 1, root / "single-before")
    bulk_runs, single_runs = [], []
    worker = "one worker with torch.compile" if where.compile_unet else "one default worker"
    for i, (label, queue) in enumerate(where.queues.items()):
        offset = 100_000 * (n + 1) + 10_000 * i
        bulk_runs.append(through_queue(f"imggen, {worker}, {label}", queue, where.bulk, offset))
        single_runs.append(
            one_at_a_time(f"imggen submit().wait(), {label}", queue, where.single, offset + 5000)
        )
    after = plain_loop(where.model, where.bulk, 4, root / "loop-4-after")
    one_after = plain_loop(where.model, where.single, 1, root / "single-after")
    one_job = plain_loop(where.model, where.bulk, 1, root / "loop-1")
    compiled = []
    if where.compile_unet:
        compiled.append(plain_loop(where.model, where.bulk, 4, root / "loop-4-compiled", True))
    reference = (before.jobs_per_s + after.jobs_per_s) / 2
    single_reference = (one_before.jobs_per_s + one_after.jobs_per_s) / 2
    _record(throughput, [one_job, before, *compiled, *bulk_runs], reference)
    _record(single, [one_before, *single_runs], single_reference)


def _record(paths: dict[str, Paired], runs: list[Throughput], reference: float) -> None:
    for run in runs:
        path = paths.setdefault(run.label, Paired())
        path.runs.append(run)
        path.references.append(reference)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=48, help="bulk jobs for table 1")
    parser.add_argument("--single", type=int, default=12, help="jobs for table 3")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds of tables 1 and 3")
    parser.add_argument("--backlog", type=int, default=300, help="bulk jobs for table 2")
    parser.add_argument("--samples", type=int, default=8, help="interactive jobs for table 2")
    parser.add_argument("--submissions", type=int, default=1000, help="jobs for table 4")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows for table 4")
    parser.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    parser.add_argument(
        "--latency-only", action="store_true", help="table 2 alone (one worker, no loop)"
    )
    parser.add_argument("--rounds-only", action="store_true", help="tables 1 and 3 alone")
    parser.add_argument(
        "--torch-compile", action="store_true", help="workers and a loop with torch.compile"
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.single, args.backlog, args.samples, args.rounds = 8, 4, 16, 2, 1
        args.submissions, args.batch_rows = 50, 200
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(os.cpu_count() or 1)
    texts = prompts(args.jobs)
    throughput: dict[str, Paired] = {}
    single: dict[str, Paired] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        _redis(Path(tmp)) as redis_url,
        postgres_database() as database_url,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        compiling = {"torch_compile": "true"} if args.torch_compile else {}
        queue = cluster(root, "default", PRETRAINED, redis_url, database_url, **compiling)
        stack.callback(queue.stop)
        queue.start_worker(concurrency=1)
        if args.latency_only:
            queue.client.submit("warm up", seed=1, **SHAPE).wait(timeout=600)
            latency = interactive_latency(queue, args.backlog, args.samples)
            print(f"# imggen scheduling, {time.strftime('%Y-%m-%d')}, table 2 alone")
            print_table(latency_table(latency))
            return
        (root / "embedded").mkdir()
        embedded_default = stack.enter_context(
            contextlib.contextmanager(with_worker)(
                # The shipped polling interval (the test deployments poll faster).
                embedded(
                    "embedded",
                    root / "embedded",
                    PRETRAINED,
                    broker_polling_interval=POLL,
                    **compiling,
                )
            )
        )
        queues: dict[str, Any] = {
            "Redis + PostgreSQL": queue,
            "embedded default (SQLite, SQL broker)": embedded_default,
        }
        for running in queues.values():
            running.client.submit("warm up", seed=1, **SHAPE).wait(timeout=600)
            if args.torch_compile:  # a full batch, the shape the rounds' batches compile for
                warm_up = [{"prompt": text, "seed": i} for i, text in enumerate(texts)]
                running.client.wait_batch(
                    running.client.submit_batch(warm_up, name="warm up", **SHAPE), timeout=3600
                )
        where = Round(queues, PRETRAINED, root, texts, texts[: args.single], args.torch_compile)
        for n in range(args.rounds):
            one_round(n, where, throughput, single)
        if not args.rounds_only:
            latency = interactive_latency(queue, args.backlog, args.samples)
            submits = submission_rates(queue, args.submissions, args.batch_rows)
    print(f"# imggen scheduling, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, shapes model")
    print("# workers with torch.compile" if args.torch_compile else "# no torch.compile")
    bulk_paths, single_paths = list(throughput.values()), list(single.values())
    measured = () if args.rounds_only else (latency, submits)
    for table in tables(bulk_paths, single_paths, args.rounds, *measured):
        print_table(table)


if __name__ == "__main__":
    main()
