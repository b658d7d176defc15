"""Throughput benchmarks, each measured side by side in one run; prints markdown tables.

    python -m bench.throughput [--quick] [--prompts ../shared/data/PartiPrompts.tsv] [--only …]

1. overhead: the same jobs in an in-process loop over imggen vs through Redis + one worker
   (batching off, on, and on with chaining off), one job at a time, and (1a) four submitted at
   once; with each job's time outside its stages (``bench/overhead.py``);
   1b. bookkeeping: what claim, commit and publish cost per stage and per job, without a worker;
2. batching: denoise throughput with cross-job batching on vs off, 1, 4 and 8 compatible jobs;
3. caches: a workload of repeated and paraphrased prompts, caches off vs on;
4. memory: worker RSS after 50 and after 500 jobs.

Needs redis-server and PostgreSQL (as the chaos bench). Tiny random-weight models, CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from bench import batching, bookkeeping, caches, memory, overhead
from bench.common import BASE_PROMPTS, print_table
from imggen.tiny import make_tiny, make_tiny_clip
from testbed.services import RedisServer
from worker.demo import read_prompts

EVERYTHING = ("overhead", "bookkeeping", "batching", "caches", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--prompts", type=Path, help="prompt file for the cache workload (TSV or text)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(EVERYTHING)}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    only = set(args.only.split(",")) if args.only else set(EVERYTHING)
    prompts = read_prompts(args.prompts, 40) if args.prompts else BASE_PROMPTS
    print(
        f"# imggen throughput, {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        "tiny random-weight models"
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
                    result = overhead.measure(root, model, redis.url, jobs, rounds)
                    print_table(overhead.table(result, section))
            if "bookkeeping" in only:
                jobs = 10 if args.quick else 60
                print_table(bookkeeping.table(bookkeeping.measure(root, redis.url, jobs)))
            if "batching" in only:
                print_table(batching.table(batching.measure(root, model, redis.url)))
            if "caches" in only:
                jobs = 40 if args.quick else 300
                cached = caches.measure(root, model, clip_dir, redis.url, prompts, jobs)
                print_table(caches.table(cached))
            if "memory" in only:
                jobs = 60 if args.quick else 500
                print_table(memory.table(memory.measure(root, model, redis.url, jobs)))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
