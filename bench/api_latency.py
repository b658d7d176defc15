"""Submit latency of the HTTP API: POST /v1/jobs against a local API process.

    python -m bench.api_latency [--requests 500] [--concurrency 8]
                                [--database-url URL] [--broker-url URL]

Defaults to the embedded set-up (SQLite, Celery over SQLite) in a temporary folder; pass
PostgreSQL and Redis URLs for the production shape. No worker runs: this measures the submit
path (auth, validation, quota, the job's transaction, the publish), not generation.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from migrations import upgrade
from producer.db import session_scope
from producer.keys import create_key
from producer.settings import Settings

BODY = {"prompt": "a lighthouse at dusk", "n": 1, "steps": 20, "width": 512, "height": 512}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url")
    parser.add_argument("--broker-url")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        values = {
            "home": home,
            "api_submissions_per_minute": "1000000",
            "api_max_in_flight": "1000000",
        }
        values |= {"database_url": args.database_url} if args.database_url else {}
        values |= {"broker_url": args.broker_url} if args.broker_url else {}
        settings = Settings.model_validate(values)
        upgrade(settings.resolved_database_url)
        with session_scope(settings.resolved_database_url) as session:
            _, key = create_key(session, "bench")
        env = dict(os.environ) | {f"IMGGEN_{k.upper()}": v for k, v in values.items()}
        port = _free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        try:
            _wait_until_up(base)
            with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
                for _ in range(20):  # warm up connections and caches
                    http.post("/v1/jobs", json=BODY)

                def one(_: int) -> float:
                    started = time.perf_counter()
                    response = http.post("/v1/jobs", json=BODY)
                    response.raise_for_status()
                    return (time.perf_counter() - started) * 1000

                started = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    latencies = sorted(pool.map(one, range(args.requests)))
                wall = time.perf_counter() - started
        finally:
            api.terminate()
            api.wait(10)

    shape = "embedded (SQLite + SQL broker)" if not args.database_url else "PostgreSQL + Redis"
    print(f"POST /v1/jobs, {shape}, {args.requests} requests, {args.concurrency} concurrent\n")

    def percentile(q: float) -> float:
        return latencies[min(int(q * len(latencies)), len(latencies) - 1)]

    row = [statistics.median(latencies), percentile(0.9), percentile(0.99), latencies[-1]]
    print("| p50 ms | p90 ms | p99 ms | max ms | submits/s |\n|---:|---:|---:|---:|---:|")
    print("| " + " | ".join(f"{v:.1f}" for v in row) + f" | {len(latencies) / wall:.0f} |")


def _wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
