"""The scheduler's order at a stage and the claims that follow it, against real SQLite and
PostgreSQL databases: lanes, priorities, fair share, age; a message names a hint, not the run;
bulk work at denoise lets compatible jobs catch up, interactive work never waits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from producer.db import session_scope
from producer.jobs import create_job
from producer.keys import create_key
from producer.models import Job, RegistryEntry, StageRun, utcnow
from producer.scheduling import AFFINITY_S, interactive_waiting, next_waiting, place_in_queue
from producer.spec import validate_spec
from worker.queue.claims import Claimed, Refusal, Refused, claim_stage
from worker.queue.commits import commit_stage
from worker.queue.selection import Batching, claim_companions, claim_next
from worker.settings import WorkerSettings

LEASE: dict[str, Any] = {"lease_seconds": 60.0, "max_attempts": 3}
BATCH = Batching(images=8, wait_seconds=30.0)


def _job(db: str, owner: int | None = None, model: str = "tiny", **spec: Any) -> str:
    fields = {"prompt": "a fox", "n": 2, "seed": 1, "steps": 4, "width": 64, "height": 64}
    with session_scope(db) as session:
        job = create_job(session, validate_spec(fields | spec), model, owner_key_id=owner)
        return job.id


def _key(db: str, name: str) -> int:
    with session_scope(db) as session:
        return create_key(session, name)[0].id


def _order(db: str, stage: str = "expand") -> list[str]:
    with session_scope(db) as session:
        return [w.job_id for w in next_waiting(session, stage, utcnow(), limit=100)]


def _claim_next(db: str, stage: str, hint: str, batching: Batching | None = None) -> Any:
    with session_scope(db) as session:
        return claim_next(session, stage, hint, batching=batching, **LEASE)


def _to_denoise(db: str, job_id: str) -> None:
    """Run the job's expand and encode (claim and commit), so that it waits at denoise."""
    for stage in ("expand", "encode"):
        with session_scope(db) as session:
            claim = claim_stage(session, job_id, stage, **LEASE)
            assert isinstance(claim, Claimed)
            assert commit_stage(session, job_id, stage, claim.token, {}) is not None


def test_interactive_before_bulk_then_priority_then_age(db: str) -> None:
    old_bulk = _job(db, lane="bulk")
    urgent_bulk = _job(db, lane="bulk", priority=5)
    interactive = _job(db)
    later_interactive = _job(db)
    urgent = _job(db, priority=9)
    assert _order(db) == [urgent, interactive, later_interactive, urgent_bulk, old_bulk]


def test_owners_take_turns_within_a_lane(db: str) -> None:
    heavy, light = _key(db, "heavy"), _key(db, "light")
    heavy_jobs = [_job(db, heavy, lane="bulk") for _ in range(6)]
    light_jobs = [_job(db, light, lane="bulk") for _ in range(2)]
    taken = []
    for _ in range(6):
        claim = _claim_next(db, "expand", heavy_jobs[0])
        assert isinstance(claim, Claimed)
        taken.append(claim.job.id)
    # The heavy key queued first, but the light key's jobs are served in turn with it.
    assert taken[:4] == [heavy_jobs[0], light_jobs[0], heavy_jobs[1], light_jobs[1]]
    assert taken[4:] == heavy_jobs[2:4]


def test_a_worker_takes_work_for_the_model_it_holds_first_unless_other_work_waited_long(
    db: str,
) -> None:
    other_old, other = _job(db, model="xl"), _job(db, model="xl")
    mine = _job(db)

    def order() -> list[str]:
        with session_scope(db) as session:
            found = next_waiting(session, "expand", utcnow(), prefer_models=["tiny"])
            return [w.job_id for w in found]

    assert order() == [mine, other_old, other]
    assert _order(db) == [other_old, other, mine]  # without a preference: by age
    with session_scope(db) as session:
        claim = claim_next(session, "expand", other_old, resident=["tiny"], **LEASE)
    assert isinstance(claim, Claimed) and claim.job.id == mine
    # Work for another model that has waited past the bound goes by age again.
    mine_too = _job(db)
    with session_scope(db) as session:
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == other_old)
            .values(enqueued_at=utcnow() - timedelta(seconds=AFFINITY_S + 1))
        )
    assert order() == [other_old, mine_too, other]


def _serves(db: str, host: str, *models: str, refused: str | None = None) -> None:
    with session_scope(db) as session:
        for model in models:
            session.add(
                RegistryEntry(
                    hostname=host,
                    model=model,
                    family="sd",
                    pipeline="StableDiffusionPipeline",
                    samplers=[],
                    adapters=[],
                    refused=refused,
                    updated_at=utcnow(),
                )
            )


def test_a_host_leaves_work_for_models_only_other_hosts_serve_to_them(db: str) -> None:
    _serves(db, "a@gpu", "tiny")
    _serves(db, "b@gpu", "tiny", "xl")
    _serves(db, "a@gpu", "flux", refused="not a pipeline imggen runs")
    xl, tiny, unknown, flux = (_job(db, model=m) for m in ("xl", "tiny", "nowhere", "flux"))

    def order(host: str) -> list[str]:
        with session_scope(db) as session:
            return [w.job_id for w in next_waiting(session, "expand", utcnow(), host=host)]

    # Work for a model no host serves (or only refuses) is anyone's.
    assert order("b@gpu") == [xl, tiny, unknown, flux]
    assert order("a@gpu") == [tiny, unknown, flux]
    with session_scope(db) as session:
        assert interactive_waiting(session, ["expand"], "a@gpu")
    for job in (tiny, unknown, flux):
        with session_scope(db) as session:
            assert isinstance(claim_next(session, "expand", job, host="a@gpu", **LEASE), Claimed)
    with session_scope(db) as session:
        assert not interactive_waiting(session, ["expand"], "a@gpu")
        refused = claim_next(session, "expand", xl, host="a@gpu", **LEASE)
    assert isinstance(refused, Refused) and refused.reason is Refusal.ELSEWHERE  # for b
    with session_scope(db) as session:
        claim = claim_next(session, "expand", xl, host="b@gpu", **LEASE)
    assert isinstance(claim, Claimed) and claim.job.id == xl


def test_a_message_claims_the_best_run_and_its_own_job_waits(db: str) -> None:
    bulk = _job(db, lane="bulk")
    interactive = _job(db)
    claim = _claim_next(db, "expand", bulk)  # the message named the bulk job
    assert isinstance(claim, Claimed) and claim.job.id == interactive
    claim = _claim_next(db, "expand", interactive)  # and the interactive job's message, the bulk
    assert isinstance(claim, Claimed) and claim.job.id == bulk
    refused = _claim_next(db, "expand", bulk)  # nothing left: the refusal is about the hint
    assert isinstance(refused, Refused) and refused.reason is Refusal.BUSY


def test_a_waiting_job_knows_its_place_and_gets_an_eta_once_stages_are_measured(db: str) -> None:
    first, second = _job(db, lane="bulk"), _job(db, lane="bulk")
    interactive = _job(db)
    with session_scope(db) as session:
        now = utcnow()
        place = place_in_queue(session, second, "expand", now)
        assert place is not None and place.position == 2 and place.eta_seconds is None
        assert place_in_queue(session, interactive, "expand", now).position == 0  # type: ignore[union-attr]
        assert place_in_queue(session, first, "encode", now) is None  # not waiting there
    # Two finished runs of every stage, a second each: the rate and the durations are known.
    for job_id in (_job(db), _job(db)):
        with session_scope(db) as session:
            session.execute(
                update(StageRun)
                .where(StageRun.job_id == job_id)
                .values(status="succeeded", finished_at=utcnow(), duration_s=1.0)
            )
            session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
    with session_scope(db) as session:
        place = place_in_queue(session, second, "expand", utcnow())
    assert place is not None and place.position == 2
    assert place.eta_seconds is not None and place.eta_seconds >= 4.0  # and 4 later stages


def test_bulk_work_at_denoise_waits_for_compatible_jobs_still_upstream(db: str) -> None:
    ready, coming = _job(db, lane="bulk"), _job(db, lane="bulk")
    _to_denoise(db, ready)
    refused = _claim_next(db, "denoise", ready, BATCH)
    assert isinstance(refused, Refused) and refused.reason is Refusal.WAITING
    # Its message comes back when the wait is over: the company's own messages claim the batch.
    assert BATCH.wait_seconds - 5 < refused.retry_in <= BATCH.wait_seconds
    # Without company on the way, or once it has arrived, the batch runs.
    _to_denoise(db, coming)
    claim = _claim_next(db, "denoise", ready, BATCH)
    assert isinstance(claim, Claimed) and claim.job.id == ready
    with session_scope(db) as session:
        companions = claim_companions(session, claim.job, "denoise", images=6, **LEASE)
    assert [c.job.id for c in companions] == [coming]


def test_interactive_work_never_waits_nor_bulk_work_past_the_bound(db: str) -> None:
    interactive, coming = _job(db), _job(db, lane="bulk")
    _to_denoise(db, interactive)
    claim = _claim_next(db, "denoise", interactive, BATCH)
    assert isinstance(claim, Claimed) and claim.job.id == interactive

    stale, _ = _job(db, lane="bulk"), _job(db, lane="bulk")
    _to_denoise(db, stale)
    with session_scope(db) as session:
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == stale, StageRun.stage == "denoise")
            .values(enqueued_at=utcnow() - timedelta(seconds=31))
        )
    claim = _claim_next(db, "denoise", stale, BATCH)
    assert isinstance(claim, Claimed) and claim.job.id == stale
    assert coming  # still upstream, and waited for by nobody


def test_incompatible_work_runs_while_other_bulk_work_waits(db: str) -> None:
    waiting, _ = _job(db, lane="bulk"), _job(db, lane="bulk")  # the second stays upstream
    other = _job(db, lane="bulk", steps=8)  # another batch key, nothing of it upstream
    _to_denoise(db, waiting)
    _to_denoise(db, other)
    claim = _claim_next(db, "denoise", waiting, BATCH)
    assert isinstance(claim, Claimed) and claim.job.id == other


def test_an_interactive_batch_takes_interactive_companions_only(db: str) -> None:
    interactive, bulk, other = _job(db), _job(db, lane="bulk"), _job(db)
    for job_id in (interactive, bulk, other):
        _to_denoise(db, job_id)
    claim = _claim_next(db, "denoise", bulk, BATCH)
    assert isinstance(claim, Claimed) and claim.job.id == interactive
    with session_scope(db) as session:
        companions = claim_companions(session, claim.job, "denoise", images=6, **LEASE)
    assert [c.job.id for c in companions] == [other]


def test_retries_without_an_attempt_are_not_capped_by_celery() -> None:
    """A busy lease or bulk work waiting for company retries its task as often as it takes;
    only the attempts in SQL are capped (Celery's default cap of 3 dropped such messages)."""
    from worker import tasks

    stage_tasks = [tasks.expand, tasks.encode, tasks.denoise, tasks.decode, tasks.score]
    assert [task.max_retries for task in stage_tasks] == [None] * 5


def test_bulk_work_gives_way_only_to_interactive_work_this_worker_can_take(db: str) -> None:
    _job(db, lane="bulk")
    with session_scope(db) as session:
        assert not interactive_waiting(session, ["expand"])  # bulk work only
    _job(db)
    with session_scope(db) as session:
        assert interactive_waiting(session, ["expand", "encode"])
        assert not interactive_waiting(session, ["denoise"])  # waits where others serve


def test_bulk_batches_hold_twice_the_images_unless_told_otherwise() -> None:
    default = WorkerSettings(batch_max_images=8)
    assert (default.batch_images("interactive"), default.batch_images("bulk")) == (8, 16)
    assert WorkerSettings(batch_max_images=8, bulk_batch_max_images=12).batch_images("bulk") == 12
    # Never fewer than an interactive batch, and no batching means none for bulk work either.
    assert WorkerSettings(batch_max_images=8, bulk_batch_max_images=4).batch_images("bulk") == 8
    assert WorkerSettings(batch_max_images=1, bulk_batch_max_images=16).batch_images("bulk") == 1
