"""Artifacts handed from a committed stage to the next one in the same process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image as PILImage

from producer.artifacts import ArtifactStore
from producer.spec import JobSpec
from producer.stage_outputs import DecodeOutput, EarlierOutputs
from worker.settings import WorkerSettings
from worker.stages.context import StageContext, StageResult
from worker.stages.decode import decode
from worker.stages.denoise import denoise_jobs
from worker.stages.encode import encode
from worker.stages.expand import expand
from worker.stages.handover import Handover
from worker.stages.runtime import Runtime
from worker.stages.score import score


def test_an_artifact_is_taken_once_and_the_oldest_go_past_the_bound() -> None:
    handover = Handover(max_bytes=3 * 4096)
    for name in "abcd":  # 4 KiB each: the fourth pushes the first out
        handover.offer(name, {"latents": torch.zeros(1024)})
    assert handover.take("a") is None
    taken = handover.take("b")
    assert taken is not None and torch.equal(taken["latents"], torch.zeros(1024))
    assert handover.take("b") is None  # its one reader had it
    handover.offer("big", {"latents": torch.zeros(4 * 1024)})  # over the bound: not kept
    assert handover.take("big") is None
    assert len(handover) == 2
    off = Handover(max_bytes=0)  # IMGGEN_HANDOVER_MB=0
    off.offer("a", {"latents": torch.zeros(1)})
    assert off.take("a") is None


def test_a_jobs_slice_of_a_batch_is_kept_as_its_own_copy() -> None:
    batch = torch.arange(8 * 1024, dtype=torch.float32).reshape(8, 1024)
    handover = Handover(max_bytes=1 << 20)
    handover.offer("job", {"latents": batch[2:4]})
    kept = handover.take("job")["latents"]
    assert torch.equal(kept, batch[2:4])
    assert kept.untyped_storage().nbytes() == kept.nbytes  # not the batch's whole storage


def _run(
    stage: Any, runtime: Runtime, spec: JobSpec, outputs: EarlierOutputs, hand_over: bool
) -> StageResult:
    ctx = StageContext(
        job_id="job-1",
        spec=spec,
        model="tiny",
        input_image_uri=None,
        outputs=outputs,
        runtime=runtime,
        on_step=lambda step, total: None,
    )
    result = denoise_jobs([ctx])["job-1"] if stage is denoise_jobs else stage(ctx)
    assert isinstance(result, StageResult)
    outputs.add(result.output)
    if hand_over:  # as the runner does once the stage has committed
        for uri, value in result.artifacts.items():
            runtime.handover.offer(uri, value)
    return result


def test_the_next_stage_reads_from_memory_what_the_store_holds(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = WorkerSettings.model_validate(
        {"home": str(tmp_path), "models_dir": str(tiny_model_dir.parent), "exact_cache": False}
    )
    runtime = Runtime(settings, ArtifactStore(str(tmp_path / "artifacts")))
    spec = JobSpec.model_validate(
        {"prompt": "a red fox", "n": 2, "seed": 3, "steps": 3, "width": 64, "height": 64}
    )
    outputs = EarlierOutputs()
    for stage in (expand, encode, denoise_jobs):
        _run(stage, runtime, spec, outputs, hand_over=True)
    decoded = _run(decode, runtime, spec, outputs, hand_over=True)
    images = decoded.artifacts
    assert set(images) == set(outputs.get(DecodeOutput).images)
    assert all(isinstance(image, PILImage.Image) for image in images.values())
    assert len(runtime.handover) == len(images)  # embeddings and latents were taken

    # Score takes the very images decode made, and leaves nothing behind.
    uri = next(iter(images))
    assert runtime.load_image(uri) is images[uri]
    runtime.handover.offer(uri, images[uri])
    from_memory = _run(score, runtime, spec, outputs, hand_over=False)
    assert len(runtime.handover) == 0

    # What the store holds is the same image, pixel for pixel (so every metric is the same),
    # and decode run again from the stored latents makes it again.
    again = _run(decode, runtime, spec, outputs, hand_over=False)
    for uri, image in again.artifacts.items():
        stored = runtime.load_image(uri)
        assert (stored.mode, stored.size) == (images[uri].mode, images[uri].size)
        assert stored.tobytes() == image.tobytes() == images[uri].tobytes()
    from_store = _run(score, runtime, spec, outputs, hand_over=False)
    assert from_store.output == from_memory.output
