"""Keep a running stage's leases alive and its progress visible, off the thread doing the work.

The denoising loop only notes its step in memory (``on_step``); a background thread writes the
latest step of each job of the batch and renews their leases, in one transaction per write. The
loop never waits on the database, so bookkeeping does not slow the accelerator down, and a
stage that is alive keeps its leases however long it takes. When a renewal fails (the job was
canceled, or another worker took the stage over after a stall) the job's next ``on_step``
raises StageAborted.

One thread per process serves every running stage (a thread started and joined per stage cost
milliseconds per stage on a busy CPU).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session

from imggen.errors import StageAborted
from producer.db import in_transaction
from producer.events import notify
from worker.queue.leases import renew_lease
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# Progress is written at most this often (twice a second is as often as a person reads a
# progress bar): each write is a transaction, and takes CPU from the work it reports on.
PROGRESS_INTERVAL_S = 0.5
# A bulk batch's progress is seen as jobs that end, not as one job's steps: after its first step
# (written at once, so the operator sees where it is), its steps are written this seldom. On a
# CPU the writes, and the watchers each one wakes, cost the denoising more than their own CPU
# time: two threads that step in lockstep wait for each other whenever anything else runs
# (measured: a batch took twice as long at 0.5 s).
BULK_PROGRESS_INTERVAL_S = 5.0


class StageMonitor:
    """Leases and progress for one stage run of one or more jobs (a batch), as a context."""

    def __init__(
        self,
        settings: WorkerSettings,
        stage: str,
        tokens: dict[str, str],
        progress_every: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self.settings, self.stage, self.tokens = settings, stage, tokens
        self.progress_every = progress_every
        self._progressed: float | None = None  # when progress was last written
        self._steps: dict[str, tuple[int, int]] = {}  # job -> latest (step, total), loop-written
        self._written: dict[str, tuple[int, int]] = {}
        self._lost: set[str] = set()
        self._renewed = time.monotonic()
        self._quiet_until = 0.0  # after a failed write: the database is likely down

    def on_step(self, job_id: str) -> Callable[[int, int], None]:
        """The progress callback for ``job_id``: cheap, it only records the step."""

        def report(step: int, total: int) -> None:
            if job_id in self._lost:
                raise StageAborted(f"job {job_id} {self.stage}: canceled or lease lost")
            self._steps[job_id] = (step, total)

        return report

    def __enter__(self) -> StageMonitor:
        _ticker.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Waits for a write in progress: none may land after the stage's commit.
        _ticker.remove(self)

    def tick(self) -> None:
        """Write what changed since the last tick, and renew every lease when due."""
        renew_every = self.settings.stage_lease_seconds / 4
        now = time.monotonic()
        due = now - self._renewed >= renew_every
        changed = {
            job_id: step
            for job_id, step in list(self._steps.items())
            if self._written.get(job_id) != step
        }
        if (
            not due
            and self._progressed is not None
            and now - self._progressed < self.progress_every
        ):
            changed = {}
        if (not changed and not due) or now < self._quiet_until:
            return
        try:
            self._write(changed, renew_all=due)
        except Exception:  # noqa: BLE001 - a lost connection: try again a beat later
            log.warning("lease and progress write failed for %s", self.stage, exc_info=True)
            self._quiet_until = now + renew_every
            return
        if due:
            self._renewed = time.monotonic()
        if changed:
            self._progressed = time.monotonic()

    def _write(self, changed: dict[str, tuple[int, int]], *, renew_all: bool) -> None:
        settings = self.settings
        jobs = [j for j in self.tokens if j not in self._lost and (renew_all or j in changed)]

        def write(session: Session) -> list[str]:
            lost = []
            for job_id in jobs:
                if not renew_lease(
                    session,
                    job_id,
                    self.stage,
                    self.tokens[job_id],
                    settings.stage_lease_seconds,
                    progress=changed.get(job_id),
                ):
                    lost.append(job_id)
            return lost

        self._lost.update(in_transaction(settings.resolved_database_url, write))
        self._written.update(changed)
        for job_id in changed:
            notify(settings.resolved_redis_url, job_id)


class _Ticker:
    """The process's monitor thread: ticks every running stage's monitor."""

    def __init__(self) -> None:
        self._monitors: set[StageMonitor] = set()
        self._lock = threading.Lock()  # held while ticking: a stage leaves between ticks
        self._thread: threading.Thread | None = None

    def add(self, monitor: StageMonitor) -> None:
        with self._lock:
            self._monitors.add(monitor)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stage-monitor", daemon=True)
                self._thread.start()

    def remove(self, monitor: StageMonitor) -> None:
        with self._lock:
            self._monitors.discard(monitor)

    def _run(self) -> None:
        while True:
            time.sleep(PROGRESS_INTERVAL_S)
            with self._lock:
                for monitor in list(self._monitors):
                    try:
                        monitor.tick()
                    except Exception:  # noqa: BLE001 - the thread must outlive any one stage
                        log.exception("stage monitor tick failed for %s", monitor.stage)


_ticker = _Ticker()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist in a forked child (and its lock may be held there).
    global _ticker
    _ticker = _Ticker()


os.register_at_fork(after_in_child=_after_fork_in_child)
