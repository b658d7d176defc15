"""The chaos scenarios at full size, one table: jobs, faults, lost, duplicates, drain time, and
how long the cluster took to recover from its faults (the slowest, per scenario).

    python -m bench.chaos [--scale 1.0] [--only kill_pool,redis] [--hog]

``--hog`` runs every scenario with the CPU saturated (one busy-loop process per core).

Needs redis-server on PATH and PostgreSQL (IMGGEN_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres). The CI suite (tests/chaos) runs the
same scenarios smaller.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from imggen.tiny import make_tiny
from testbed.chaos import scenarios
from testbed.cluster import Cluster, Outcome
from testbed.hog import saturated_cpu
from testbed.services import POSTGRES_ADMIN_URL, RedisServer, postgres_database


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job and fault counts")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--hog", action="store_true", help="saturate the CPU while each runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def size(n: int) -> int:
        return max(1, round(n * args.scale))

    runs: dict[str, Callable[[Cluster, RedisServer], Outcome]] = {
        "kill_pool": lambda c, r: scenarios.kill_pool_processes(c, jobs=size(200), kills=size(20)),
        "kill_worker": lambda c, r: scenarios.kill_whole_worker(c, jobs=size(200), kills=size(5)),
        "kill_in_batch": lambda c, r: scenarios.kill_worker_during_a_batch(
            c, jobs=size(200), kills=size(5)
        ),
        "redis": lambda c, r: scenarios.restart_redis(c, r, jobs=size(200), down_s=10),
        "db_kill": lambda c, r: scenarios.terminate_database_connections(
            c, POSTGRES_ADMIN_URL, jobs=size(200), rounds=size(10)
        ),
        "duplicates": lambda c, r: scenarios.duplicate_every_message(c, jobs=size(100))[0],
        "visibility": lambda c, r: scenarios.stage_longer_than_visibility_timeout(c),
        "warm_shutdown": lambda c, r: scenarios.warm_shutdown_mid_stage(c),
    }
    extra = {
        "visibility": {"broker_visibility_timeout_seconds": "2"},
        "warm_shutdown": {"worker_soft_shutdown_seconds": "1"},
    }
    chosen = [name for name in runs if not args.only or name in args.only.split(",")]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny(root / "model")
        for name in chosen:
            redis_server = RedisServer(root / f"redis-{name}")
            (root / f"redis-{name}").mkdir()
            redis_server.start()
            started = time.monotonic()
            try:
                with postgres_database() as database_url:
                    cluster = Cluster(
                        root / name, model, database_url, redis_server.url, **extra.get(name, {})
                    )
                    try:
                        with saturated_cpu() if args.hog else nullcontext():
                            outcome = runs[name](cluster, redis_server)
                    finally:
                        cluster.stop()
            finally:
                redis_server.stop()
            rows.append((name, outcome, time.monotonic() - started))
            print(f"{name}: {outcome}", flush=True)

    hogged = ", CPU saturated" if args.hog else ""
    print(f"\nChaos scenarios, scale {args.scale}{hogged}, {time.strftime('%Y-%m-%d')}\n")
    columns = ["scenario", "jobs", "faults", "succeeded", "lost", "duplicates"]
    columns += ["attempts over cap", "outbox left", "slowest recovery s", "drain s", "total s"]
    print("| " + " | ".join(columns) + " |")
    print("|---" + "|---:" * (len(columns) - 1) + "|")
    for name, o, total in rows:
        print(
            f"| {name} | {o.jobs} | {o.faults} | {o.succeeded} | {o.lost} | {o.duplicates} | "
            f"{o.over_cap} | {o.outbox_left} | {_recovery(o)} | {o.drain_s} | {total:.0f} |"
        )


def _recovery(outcome: Outcome) -> str:
    if not outcome.recovery_s:
        return "-"
    slowest = outcome.slowest_recovery_s
    return "never" if slowest is None else f"{slowest:.1f}"


if __name__ == "__main__":
    main()
