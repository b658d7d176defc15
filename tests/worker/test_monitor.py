"""The stage monitor: progress and leases written off the work's thread, cancellation noticed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imggen.errors import StageAborted
from producer.db import session_scope
from producer.jobs import cancel_job, get_job
from tests.worker.test_leases import LEASE, _new_job, _stage
from worker.queue.claims import Claimed, claim_stage
from worker.queue.monitor import PROGRESS_INTERVAL_S, StageMonitor
from worker.settings import WorkerSettings


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)


def _claimed(db: str) -> tuple[str, Claimed]:
    """A new job whose expand stage is claimed, as a running stage's monitor finds it."""
    job_id = _new_job(db)
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(claim, Claimed)
    return job_id, claim


def test_the_monitor_shows_progress_renews_the_lease_and_notices_a_cancel(
    db: str,
    tmp_path: Path,
) -> None:
    job_id, claim = _claimed(db)
    # A one-second lease is renewed every quarter second.
    settings = WorkerSettings.model_validate(
        {"home": str(tmp_path), "database_url": db, "stage_lease_seconds": 1.0}
    )

    def progress() -> tuple[int | None, int | None]:
        with session_scope(db) as session:
            job = get_job(session, job_id)
            return job.progress_step, job.progress_total

    with StageMonitor(settings, "expand", {job_id: claim.token}) as monitor:
        report = monitor.on_step(job_id)
        report(3, 10)  # only noted: the loop never waits on the database
        assert progress() == (None, None)
        _eventually(lambda: progress() == (3, 10))

        granted = _stage(db, job_id, "expand").lease_expires_at
        _eventually(lambda: _stage(db, job_id, "expand").lease_expires_at > granted)

        with session_scope(db) as session:
            assert cancel_job(session, job_id)

        def stopped() -> bool:
            try:
                report(4, 10)
            except StageAborted:
                return True
            return False

        _eventually(stopped, timeout=10 * PROGRESS_INTERVAL_S + 5)
    with pytest.raises(StageAborted):
        report(5, 10)  # and it stays stopped


def test_a_bulk_batch_writes_its_progress_seldom(db: str, tmp_path: Path) -> None:
    """Bulk steps are written every ``progress_every`` seconds after the first, not at every
    tick (each write slows the batch it reports on)."""
    job_id, claim = _claimed(db)
    settings = WorkerSettings.model_validate(
        {"home": str(tmp_path), "database_url": db, "stage_lease_seconds": 60.0}
    )

    def progress() -> int | None:
        with session_scope(db) as session:
            return get_job(session, job_id).progress_step

    every = 8 * PROGRESS_INTERVAL_S
    with StageMonitor(settings, "expand", {job_id: claim.token}, progress_every=every) as monitor:
        monitor.on_step(job_id)(3, 10)
        _eventually(lambda: progress() == 3, timeout=4 * PROGRESS_INTERVAL_S + 5)  # at once
        written = time.monotonic()
        monitor.on_step(job_id)(4, 10)
        time.sleep(3 * PROGRESS_INTERVAL_S)  # ticks pass: the new step waits its turn
        if time.monotonic() - written < every - PROGRESS_INTERVAL_S:
            assert progress() == 3
        _eventually(lambda: progress() == 4, timeout=every + 5)
        assert time.monotonic() - written >= every - 2 * PROGRESS_INTERVAL_S
