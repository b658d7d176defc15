"""Starting Celery worker processes: one command line for the CLI, the demo and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from producer.metrics import multiprocess_dir
from producer.pipeline import ALL_QUEUES


def worker_argv(
    queues: Sequence[str] = ALL_QUEUES,
    concurrency: int = 1,
    pool: str = "prefork",
    loglevel: str = "INFO",
    hostname: str | None = None,
    include: Sequence[str] = (),
    events: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """``events``: send task events and heartbeats (what Flower reads), for a broker that can
    carry them; ``extra``: more ``celery worker`` options, passed as they are."""
    argv = [
        *_celery_command(),
        "-A",
        "worker.app",
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        # Gossip and mingle broadcast between workers; the embedded SQL broker has no fanout
        # exchange, and imggen needs neither (SQL coordinates the work).
        "--without-gossip",
        "--without-mingle",
        *(["--task-events"] if events else ["--without-heartbeat"]),
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if include:
        argv.append(f"--include={','.join(include)}")
    return [*argv, *extra]


def worker_environment(
    soft_shutdown_seconds: float, base: Mapping[str, str], *, metrics: bool = False
) -> dict[str, str]:
    """The environment a worker process needs beyond ``base``.

    With a soft-shutdown window, SIGTERM must start Celery's cold shutdown path (billiard reads
    REMAP_SIGTERM at import): stages still running when the window closes are stopped and their
    messages handed back, instead of holding the shutdown for as long as they take. With
    ``metrics``, a fresh folder where every pool process writes its Prometheus values.
    """
    env = dict(base)
    if soft_shutdown_seconds > 0:
        env["REMAP_SIGTERM"] = "SIGQUIT"
    return multiprocess_dir(env) if metrics else env


def _celery_command() -> list[str]:
    # The console script, not "python -m celery": Celery's restart (SIGHUP, used by the
    # consumer watchdog) re-executes sys.argv, which "-m" does not survive.
    script = Path(sys.executable).with_name("celery")
    return [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "celery"]


def start_worker(
    env: Mapping[str, str] | None = None, log: IO[bytes] | None = None, **options: object
) -> subprocess.Popen[bytes]:
    """Start a worker in its own process group, so stopping it also stops its pool."""
    base = dict(env) if env is not None else dict(os.environ)
    soft_shutdown = float(base.get("IMGGEN_WORKER_SOFT_SHUTDOWN_SECONDS", "0"))
    metrics = int(base.get("IMGGEN_METRICS_PORT", "0")) > 0
    return subprocess.Popen(
        worker_argv(**options),  # type: ignore[arg-type]
        env=worker_environment(soft_shutdown, base, metrics=metrics),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Warm shutdown (SIGTERM: finish or hand back the current stage), then SIGKILL if stuck."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
