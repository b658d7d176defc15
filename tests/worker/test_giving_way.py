"""Bulk work giving way between denoising steps: the run stops, keeps its latents, and goes on
from that step to the images it would have drawn; its stage goes back to its queue without
spending the attempt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from producer.db import session_scope
from producer.stage_outputs import DenoiseOutput
from tests.worker.test_cancel_in_batch import _ready, runtime  # noqa: F401 - a fixture
from tests.worker.test_leases import LEASE, _new_job, _stage
from worker.queue.claims import Claimed, claim_stage
from worker.queue.commits import snooze_stage
from worker.stages.context import StageResult, StageYielded
from worker.stages.denoise import denoise_jobs
from worker.stages.runtime import Runtime


def test_a_batch_that_gives_way_goes_on_to_the_same_images(
    runtime: Runtime,  # noqa: F811 - the fixture
    tiny_model_dir: Path,
) -> None:
    whole = denoise_jobs([_ready(runtime, tiny_model_dir, f"alone-{i}", i) for i in range(2)])
    contexts = [_ready(runtime, tiny_model_dir, f"job-{i}", i) for i in range(2)]
    asked = []

    def after_three_asks() -> bool:
        asked.append(1)
        return len(asked) >= 3

    for ctx in contexts:
        ctx.should_yield = after_three_asks
    gave_way = denoise_jobs(contexts)
    assert gave_way == {"job-0": StageYielded(3), "job-1": StageYielded(3)}
    for ctx in contexts:
        ctx.should_yield = None
    went_on = denoise_jobs(contexts)
    for i in range(2):
        done, alone = went_on[f"job-{i}"], whole[f"alone-{i}"]
        assert isinstance(done, StageResult) and isinstance(alone, StageResult)
        assert isinstance(done.output, DenoiseOutput) and isinstance(alone.output, DenoiseOutput)
        assert done.output.cache.resumed_from == 3
        assert done.output.cache.steps_saved == 0 and done.output.cache.unet_steps == 16
        mine = runtime.load_tensors(done.output.latents)["latents"]
        theirs = runtime.load_tensors(alone.output.latents)["latents"]
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_a_stage_that_gives_way_is_queued_again_with_its_attempt_back(db: str) -> None:
    job_id = _new_job(db)
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(claim, Claimed) and claim.attempt == 1
    with session_scope(db) as session:
        assert not snooze_stage(session, job_id, "expand", "not-the-token")
        assert snooze_stage(session, job_id, "expand", claim.token)
    run = _stage(db, job_id, "expand")
    assert (run.status, run.attempts, run.lease_token) == ("queued", 0, None)
    with session_scope(db) as session:
        again = claim_stage(session, job_id, "expand", **LEASE)
    assert isinstance(again, Claimed) and again.attempt == 1


def test_a_batch_of_jobs_that_gave_way_at_different_steps_gives_way_again(
    runtime: Runtime,  # noqa: F811 - the fixture
    tiny_model_dir: Path,
) -> None:
    """One job resumed at step 3 beside a fresh one: two runs (from 0, from 3), either of which
    may last as long as a whole batch, so each gives way too; the run not begun keeps its
    latents, and both go on to the images they would have drawn."""
    whole = denoise_jobs([_ready(runtime, tiny_model_dir, f"alone-{i}", i) for i in range(2)])
    resumed, fresh = (_ready(runtime, tiny_model_dir, f"job-{i}", i) for i in range(2))
    resumed.should_yield = _yes_from_the_ask(3)
    assert denoise_jobs([resumed]) == {"job-0": StageYielded(3)}

    both = [resumed, fresh]
    for ctx in both:
        ctx.should_yield = _yes_from_the_ask(5)
    # The fresh job's run (from step 0) stops after 5 steps; the resumed one's never began.
    assert denoise_jobs(both) == {"job-0": StageYielded(3), "job-1": StageYielded(5)}
    for ctx in both:
        ctx.should_yield = None
    went_on = denoise_jobs(both)
    for i, steps_from in enumerate((3, 5)):
        done, alone = went_on[f"job-{i}"], whole[f"alone-{i}"]
        assert isinstance(done, StageResult) and isinstance(alone, StageResult)
        assert isinstance(done.output, DenoiseOutput) and isinstance(alone.output, DenoiseOutput)
        assert done.output.cache.resumed_from == steps_from
        mine = runtime.load_tensors(done.output.latents)["latents"]
        theirs = runtime.load_tensors(alone.output.latents)["latents"]
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def _yes_from_the_ask(n: int) -> Callable[[], bool]:
    asked: list[int] = []

    def ask() -> bool:
        asked.append(1)
        return len(asked) >= n

    return ask
