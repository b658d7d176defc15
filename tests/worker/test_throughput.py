"""Cross-job batching and the exact and semantic caches, through a real worker process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import func, select

import imggen
from migrations import upgrade
from producer.db import in_transaction
from producer.models import LatentCacheEntry
from producer.stage_outputs import DenoiseOutput
from testbed.deployments import Deployment, embedded, with_worker
from worker.process import start_worker, stop_worker
from worker.queue.sweeper import Sweeper

pytestmark = pytest.mark.slow
WAIT_S = 180.0
SHAPE: dict[str, Any] = {"n": 2, "steps": 10, "width": 64, "height": 64, "guidance": 5.0}


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path


def _denoise_output(dep: Deployment, job_id: str) -> DenoiseOutput:
    from producer.jobs import get_job

    def read(session: Any) -> DenoiseOutput:
        run = next(
            r for r in get_job(session, job_id, full=True).stage_runs if r.stage == "denoise"
        )
        return DenoiseOutput.model_validate(run.output)

    return in_transaction(dep.settings.resolved_database_url, read)


def test_compatible_jobs_share_a_batch_and_draw_what_they_would_alone(
    home: Path, tiny_model_dir: Path
) -> None:
    dep = embedded("batch", home, tiny_model_dir, exact_cache="false")
    prompts = ["a red fox", "a blue bird", "a green frog", "a yellow cat"]
    upgrade(dep.settings.resolved_database_url)
    handles = [
        dep.client.submit(p, seed=10 * i, negative_prompt="blurry" * i, **SHAPE)
        for i, p in enumerate(prompts)
    ]
    # A worker for the cheap stages brings all four to denoise, where they wait together.
    early = start_worker(env=dep.env, queues=["imggen.expand", "imggen.encode"], loglevel="WARNING")
    try:
        for handle in handles:
            handle.wait(timeout=WAIT_S, on_progress=_stop_at_denoise)
    except _AtDenoise:
        pass
    deadline = time.monotonic() + WAIT_S
    while not all(h.info()["stage"] == "denoise" for h in handles) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_worker(early)
    for _ in with_worker(dep):
        infos = [h.wait(timeout=WAIT_S) for h in handles]
    assert [info["status"] for info in infos] == ["succeeded"] * 4
    records = [_denoise_output(dep, h.id).cache for h in handles]
    assert {r.batch_jobs for r in records} == {4}, records

    parts = imggen.load_components(tiny_model_dir, "cpu")
    for i, (handle, prompt) in enumerate(zip(handles, prompts, strict=True)):
        alone = imggen.denoise(
            parts,
            imggen.encode_prompt(parts, prompt, "blurry" * i),
            seeds=[10 * i, 10 * i + 1],
            steps=10,
            height=64,
            width=64,
            guidance=5.0,
        )
        batched = load_file(_denoise_output(dep, handle.id).latents)["latents"]
        torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


class _AtDenoise(Exception):
    pass


def _stop_at_denoise(info: dict[str, Any]) -> None:
    if info["stage"] == "denoise":
        raise _AtDenoise


@pytest.fixture()
def cached(home: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    # Every prompt counts as similar: the tiny model's text encoder has random weights.
    yield from with_worker(
        embedded(
            "cache", home, tiny_model_dir, semantic_cache="true", semantic_levels="[[0.0, 0.5]]"
        )
    )


def test_an_identical_job_reuses_the_stored_result(cached: Deployment) -> None:
    first = cached.client.submit("a lighthouse", seed=5, **SHAPE).wait(timeout=WAIT_S)
    again = cached.client.submit("a lighthouse", seed=5, **SHAPE).wait(timeout=WAIT_S)
    record = _denoise_output(cached, again["id"]).cache
    assert (record.exact_hits, record.unet_steps, record.steps_saved) == (2, 0, 20)
    assert [Path(i["uri"]).read_bytes() for i in again["images"]] == [
        Path(i["uri"]).read_bytes() for i in first["images"]
    ]
    off = cached.client.submit("a lighthouse", seed=5, cache=False, **SHAPE).wait(timeout=WAIT_S)
    assert _denoise_output(cached, off["id"]).cache.unet_steps == 20


def test_a_similar_prompt_starts_from_a_cached_intermediate_latent(cached: Deployment) -> None:
    cached.client.submit("a lighthouse on a cliff", seed=1, **SHAPE).wait(timeout=WAIT_S)
    similar = cached.client.submit("lighthouse on a cliff, at dusk", seed=2, **SHAPE).wait(
        timeout=WAIT_S
    )
    assert similar["status"] == "succeeded"
    record = _denoise_output(cached, similar["id"]).cache
    assert record.semantic_hits == 2 and record.skipped_steps == [5, 5]
    assert record.unet_steps == 10 and all(s is not None for s in record.similarity)
    off = cached.client.submit("lighthouse at dawn", seed=3, cache=False, **SHAPE).wait(
        timeout=WAIT_S
    )
    assert _denoise_output(cached, off["id"]).cache.semantic_hits == 0


def test_the_cache_is_bounded(cached: Deployment) -> None:
    for seed in range(3):
        cached.client.submit("a lighthouse", seed=seed, **SHAPE).wait(timeout=WAIT_S)
    settings = cached.settings.model_copy(update={"cache_max_entries": 4})
    Sweeper(settings, __import__("worker.app", fromlist=["app"]).app).run_once()
    count = in_transaction(
        settings.resolved_database_url,
        lambda s: s.scalar(select(func.count()).select_from(LatentCacheEntry)),
    )
    assert count == 4
