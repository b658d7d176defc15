"""Claims, leases and fenced commits, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from producer.db import session_scope
from producer.jobs import cancel_job, create_job, get_job
from producer.models import Image, OutboxMessage, StageRun, WebhookDelivery, utcnow
from producer.outbox import add_message
from producer.spec import validate_spec
from worker.queue.claims import Claimed, Refusal, Refused, claim_stage
from worker.queue.commits import commit_stage, record_failure
from worker.queue.leases import renew_lease, restart_lease
from worker.queue.selection import claim_companions

LEASE = dict(lease_seconds=60.0, max_attempts=3)


def _new_job(db: str) -> str:
    with session_scope(db) as session:
        return create_job(session, validate_spec({"prompt": "a fox", "n": 2, "seed": 1}), "tiny").id


def _stage(db: str, job_id: str, stage: str) -> StageRun:
    with session_scope(db) as session:
        return session.scalars(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.stage == stage)
        ).one()


def _refusal(session: Session, job_id: str, stage: str) -> Refusal | None:
    claim = claim_stage(session, job_id, stage, **LEASE)
    return claim.reason if isinstance(claim, Refused) else None


def test_a_claimed_stage_cannot_be_claimed_again_while_its_lease_lives(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        first = claim_stage(session, job_id, "expand", **LEASE)
    with session_scope(db) as session:
        second = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(first, Claimed) and first.attempt == 1
    assert isinstance(second, Refused) and second.reason is Refusal.BUSY
    assert 0 < second.retry_in <= 61
    with session_scope(db) as session:
        assert get_job(session, job_id).status == "running"


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        old = claim_stage(session, job_id, "expand", **LEASE)
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == job_id, StageRun.stage == "expand")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope(db) as session:
        new = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(new, Claimed) and new.attempt == 2
    assert isinstance(old, Claimed)
    with session_scope(db) as session:
        assert not renew_lease(session, job_id, "expand", old.token, 60.0)
        assert commit_stage(session, job_id, "expand", old.token, {"prompt": "old"}) is None
    with session_scope(db) as session:
        assert commit_stage(session, job_id, "expand", new.token, {"prompt": "new"}) == "encode"
    assert _stage(db, job_id, "expand").output == {"prompt": "new"}
    assert _stage(db, job_id, "encode").status == "queued"


def test_a_take_over_records_the_lost_worker_and_a_retry_sees_the_last_failure(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:  # a worker claimed expand, then died
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == job_id, StageRun.stage == "expand")
            .values(status="running", attempts=1, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope(db) as session:
        taken = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(taken, Claimed)
    assert taken.took_over and taken.attempt == 2 and taken.previous_error_kind == "worker_lost"
    run = _stage(db, job_id, "expand")
    assert run.error == "attempt 1: worker lost (lease expired)" and run.lease_token == taken.token
    with session_scope(db) as session:
        record_failure(session, job_id, "expand", taken.token, "oom", "out of memory", final=False)
    with session_scope(db) as session:
        retry = claim_stage(session, job_id, "expand", **LEASE)
    # A plain claim keeps the last error: the retry draws one image at a time after an OOM.
    assert isinstance(retry, Claimed)
    assert not retry.took_over and retry.attempt == 3 and retry.previous_error_kind == "oom"
    assert retry.job.id == job_id and retry.job.spec["n"] == 2
    assert _stage(db, job_id, "expand").error == "out of memory"


def test_the_outbox_holds_one_message_per_stage(db: str) -> None:
    job_id = _new_job(db)  # submission added the expand message
    with session_scope(db) as session:
        add_message(session, job_id, "expand")
        add_message(session, job_id, "encode")
        add_message(session, job_id, "encode")
    with session_scope(db) as session:
        stages = session.scalars(
            select(OutboxMessage.stage).where(OutboxMessage.job_id == job_id)
        ).all()
    assert sorted(stages) == ["encode", "expand"]


def test_a_stage_webhook_names_the_finished_stage(db: str) -> None:
    spec = {"prompt": "a fox", "callback_url": "https://example.com/hook", "callback_events": "all"}
    with session_scope(db) as session:
        job_id = create_job(session, validate_spec(spec), "tiny").id
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(claim, Claimed)
    with session_scope(db) as session:
        assert commit_stage(session, job_id, "expand", claim.token, output={}) == "encode"
    with session_scope(db) as session:
        (body,) = session.scalars(
            select(WebhookDelivery.payload).where(WebhookDelivery.job_id == job_id)
        ).all()
    assert json.loads(body) == {
        "event": "job.stage",
        "job": {"id": job_id, "stage": "expand", "status": "succeeded"},
    }


def test_a_duplicate_message_for_a_finished_stage_does_nothing(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
    with session_scope(db) as session:
        assert isinstance(claim, Claimed)
        commit_stage(session, job_id, "expand", claim.token, {"prompt": "a fox"})
    with session_scope(db) as session:
        assert _refusal(session, job_id, "expand") is Refusal.DONE
        assert _refusal(session, job_id, "denoise") is Refusal.NOT_READY


def test_attempts_are_capped_and_the_job_fails_with_the_last_error(db: str) -> None:
    job_id = _new_job(db)
    for _ in range(LEASE["max_attempts"]):
        with session_scope(db) as session:
            claim = claim_stage(session, job_id, "expand", **LEASE)
        assert isinstance(claim, Claimed)
        with session_scope(db) as session:
            record_failure(session, job_id, "expand", claim.token, "transient", "boom", final=False)
    with session_scope(db) as session:
        assert _refusal(session, job_id, "expand") is Refusal.EXHAUSTED
    with session_scope(db) as session:
        job = get_job(session, job_id)
        assert job.status == "failed"
        assert job.error is not None and "3 attempts" in job.error and "boom" in job.error


def test_cancel_wins_over_a_running_stage(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
    with session_scope(db) as session:
        assert cancel_job(session, job_id)
        assert not cancel_job(session, job_id)  # already ended: one terminal state
    assert isinstance(claim, Claimed)
    with session_scope(db) as session:
        assert not renew_lease(session, job_id, "expand", claim.token, 60.0)
        assert commit_stage(session, job_id, "expand", claim.token, {"prompt": "x"}) is None
    with session_scope(db) as session:
        assert _refusal(session, job_id, "expand") is Refusal.ENDED
        assert get_job(session, job_id).status == "canceled"


def test_the_last_stage_succeeds_the_job_and_rows_are_unique(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        session.execute(update(StageRun).where(StageRun.job_id == job_id).values(status="queued"))

    def add_images(session: object, job_id: str) -> None:
        for index in range(2):
            session.add(
                Image(
                    job_id=job_id, index=index, uri=f"/x/{index}.png", width=8, height=8, seed=index
                )
            )  # type: ignore[attr-defined]

    for stage in ("expand", "encode", "denoise", "decode", "score"):
        with session_scope(db) as session:
            claim = claim_stage(session, job_id, stage, **LEASE)
        assert isinstance(claim, Claimed)
        with session_scope(db) as session:
            commit_stage(
                session, job_id, stage, claim.token, {}, add_images if stage == "decode" else None
            )
    with session_scope(db) as session:
        job = get_job(session, job_id)
        assert job.status == "succeeded" and job.finished_at is not None
        assert (
            session.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id))
            == 2
        )


def test_a_companion_claimed_into_a_batch_drops_its_unsent_message(db: str) -> None:
    spec = {"prompt": "a fox", "n": 1, "seed": 1}
    with session_scope(db) as session:
        primary, companion = (create_job(session, validate_spec(spec), "tiny").id for _ in "ab")
    for job_id in (primary, companion):  # both reach denoise, by claim and commit
        for stage in ("expand", "encode"):
            with session_scope(db) as session:
                claim = claim_stage(session, job_id, stage, **LEASE)
                assert isinstance(claim, Claimed)
                following = commit_stage(session, job_id, stage, claim.token, output={})
                assert following is not None
                add_message(session, job_id, following)  # as the hand-off writes it
    with session_scope(db) as session:
        session.execute(delete(OutboxMessage).where(OutboxMessage.stage != "denoise"))
        first = claim_stage(session, primary, "denoise", **LEASE)
        assert isinstance(first, Claimed)
        # The companion's denoise message is still in the outbox (the broker was down, say).
        joined = claim_companions(session, first.job, "denoise", images=7, **LEASE)
    assert [claim.job.id for claim in joined] == [companion]
    with session_scope(db) as session:
        left = session.execute(select(OutboxMessage.job_id, OutboxMessage.stage)).all()
    assert [tuple(row) for row in left] == [(primary, "denoise")]


def test_a_claim_that_waited_its_turn_starts_its_lease_and_time_when_it_runs(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
        assert isinstance(claim, Claimed)
        # It waited behind other work in the claiming process: its lease nearly ran out.
        long_ago = utcnow() - timedelta(seconds=50)
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == job_id, StageRun.stage == "expand")
            .values(started_at=long_ago, lease_expires_at=long_ago + timedelta(seconds=60))
        )
    with session_scope(db) as session:
        assert restart_lease(session, job_id, "expand", claim.token, 60.0)
        assert not restart_lease(session, job_id, "expand", "someone else's token", 60.0)
    run = _stage(db, job_id, "expand")
    assert run.started_at is not None and run.lease_expires_at is not None
    assert (run.lease_expires_at - run.started_at).total_seconds() == 60
    with session_scope(db) as session:
        result = commit_stage(session, job_id, "expand", claim.token, {"prompt": "a fox"})
        assert result == "encode"
    assert (_stage(db, job_id, "expand").duration_s or 99) < 5  # not the 50 s it waited
