"""A job canceled while it shares a denoise batch: its images leave the batch at the next step,
the other jobs go on unchanged, and a batch whose every job is canceled is no failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import imggen
from imggen.errors import StageAborted
from imggen.stages.denoise import DenoiseItem, denoise_batch
from producer.artifacts import ArtifactStore
from producer.spec import JobSpec
from producer.stage_outputs import EarlierOutputs
from worker.settings import WorkerSettings
from worker.stages import perform
from worker.stages.context import StageContext
from worker.stages.denoise import denoise_jobs
from worker.stages.encode import encode
from worker.stages.expand import expand
from worker.stages.runtime import Runtime

SPEC: dict[str, Any] = {"prompt": "a red fox", "n": 2, "steps": 8, "width": 64, "height": 64}


@pytest.fixture()
def runtime(tmp_path: Path, tiny_model_dir: Path) -> Runtime:
    settings = WorkerSettings.model_validate({"home": str(tmp_path), "exact_cache": False})
    return Runtime(settings, ArtifactStore(str(tmp_path / "artifacts")))


def _ready(runtime: Runtime, model: Path, job_id: str, seed: int) -> StageContext:
    """A job whose expand and encode ran, at denoise."""
    ctx = StageContext(
        job_id=job_id,
        spec=JobSpec.model_validate(SPEC | {"seed": seed}),
        model=str(model),
        input_image_uri=None,
        outputs=EarlierOutputs(),
        runtime=runtime,
        on_step=lambda step, total: None,
    )
    for stage in (expand, encode):
        ctx.outputs.add(stage(ctx).output)
    return ctx


def _canceled_after(step: int) -> Any:
    def on_step(done: int, total: int) -> None:
        if done > step:
            raise StageAborted("canceled")

    return on_step


def _rows_per_unet_call(parts: imggen.Components) -> list[int]:
    calls: list[int] = []
    forward = parts.unet.forward

    def counted(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(int(sample.shape[0]))
        return forward(sample, *args, **kwargs)

    parts.unet.forward = counted  # type: ignore[method-assign]
    return calls


def test_a_canceled_job_leaves_the_batch_and_the_others_are_unchanged(
    runtime: Runtime, tiny_model_dir: Path
) -> None:
    keep, cancel = (
        _ready(runtime, tiny_model_dir, f"job-{i}", seed) for i, seed in ((1, 5), (2, 9))
    )
    alone = denoise_jobs([_ready(runtime, tiny_model_dir, "alone", 5)])["alone"]
    parts = runtime.components(str(tiny_model_dir))
    calls = _rows_per_unet_call(parts)
    cancel.on_step = _canceled_after(2)
    results = denoise_jobs([keep, cancel])
    assert isinstance(results["job-2"], StageAborted)
    kept = results["job-1"]
    assert not isinstance(kept, StageAborted) and not isinstance(alone, StageAborted)
    # 4 images (guided: 8 rows) for the first 3 steps, then only the 2 images left (4 rows).
    assert calls == [8] * 3 + [4] * 5
    mine = runtime.load_tensors(kept.output.latents)["latents"]
    theirs = runtime.load_tensors(alone.output.latents)["latents"]
    assert torch.allclose(mine, theirs, atol=1e-4)


def test_a_batch_whose_every_job_is_canceled_ends_as_aborted_not_failed(
    runtime: Runtime, tiny_model_dir: Path
) -> None:
    contexts = [_ready(runtime, tiny_model_dir, f"job-{i}", i) for i in range(2)]
    for ctx in contexts:
        ctx.on_step = _canceled_after(1)
    results = perform("denoise", contexts)
    assert all(isinstance(result, StageAborted) for result in results.values())
    assert set(results) == {"job-0", "job-1"}


def test_a_multistep_sampler_keeps_its_rows_to_the_end(tiny_model_dir: Path) -> None:
    """DPM++ keeps earlier outputs per row, so rows stay; what is left still comes out right."""
    parts = imggen.load_components(tiny_model_dir, device="cpu")
    embeddings = imggen.encode_prompt(parts, "a red fox")
    items = [DenoiseItem(embeddings, seed) for seed in (1, 2)]
    common = {"steps": 6, "height": 64, "width": 64, "guidance": 4.0, "sampler": "dpmpp_2m"}
    alone = denoise_batch(parts, items[:1], **common).latents
    calls = _rows_per_unet_call(parts)
    both = denoise_batch(parts, items, dropped=lambda: [1], **common).latents
    assert calls == [4] * 6
    assert torch.allclose(both[:1], alone, atol=1e-4)
