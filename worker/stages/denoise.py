"""The denoise stage for a batch of compatible jobs, with the exact and semantic caches.

1. Each image of each job is looked up: an exact hit reuses final latents, a semantic hit
   resumes from a similar prompt's intermediate latent, the rest start from noise.
2. Images are grouped by the step they start at and each group runs as one batch; every image
   keeps its own generator, so it is the same whichever batch it lands in.
3. Each job gets its latents, its cache record (hits, steps saved) and the cache entries its
   fresh images make, to be written in its own commit.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from sqlalchemy.orm import Session

import imggen
from imggen.errors import StageAborted
from imggen.samplers import sampler_identity
from imggen.stages.denoise import DenoiseItem, denoise_batch
from producer.artifacts import job_key
from producer.db import in_transaction
from producer.stage_outputs import DenoiseOutput, EncodeOutput
from worker.stages import Results, latent_cache
from worker.stages.context import StageContext, StageResult, StageYielded
from worker.stages.denoise_cache import (
    ImageWork,
    cache_record,
    look_up,
    new_entries,
    set_exact_keys,
)


def denoise_jobs(contexts: list[StageContext]) -> Results:
    runtime = contexts[0].runtime
    settings = runtime.settings
    first = contexts[0].spec
    # Every job of a batch shares its adapters too (the batch key).
    parts = runtime.components(contexts[0].model, first.loras)
    # Every job of a batch shares its sampler (it is part of the batch key).
    scheduler = sampler_identity(parts.scheduler, first.scheduler)

    # 1. Each job's conditioning, then a cache lookup for each of its images.
    images: list[ImageWork] = []
    pooled: dict[str, torch.Tensor | None] = {}
    for ctx in contexts:
        encoded = ctx.outputs.get(EncodeOutput)
        embeddings = imggen.PromptEmbeddings.from_tensors(runtime.load_tensors(encoded.embeddings))
        pooled[ctx.job_id] = embeddings.pooled
        start_image = None
        if encoded.image_latents is not None:
            start_image = runtime.load_tensors(encoded.image_latents)["latents"]
        mine = [
            ImageWork(ctx, i, DenoiseItem(embeddings, seed, start_image))
            for i, seed in enumerate(ctx.seeds())
        ]
        _resume_where_it_gave_way(ctx, mine)
        images += mine
    text_to_image = not first.has_input_image
    semantic_key = latent_cache.semantic_key(
        latent_cache.model_identity(contexts[0].model, first.loras),
        scheduler,
        first.width,
        first.height,
        first.steps,
        first.guidance,
    )
    if text_to_image:
        set_exact_keys(images, scheduler)
        # Not switched off per job, and not half done already.
        usable = [image for image in images if image.ctx.spec.cache and not image.resumed]
        if usable and (settings.exact_cache or settings.semantic_cache):
            in_transaction(
                settings.resolved_database_url,
                lambda s: look_up(s, runtime, usable, pooled, semantic_key),
            )

    # 2. Run what is left, one batch per starting step.
    keep = (
        latent_cache.kept_steps(settings, first.steps)
        if settings.semantic_cache and text_to_image
        else []
    )
    alive = {ctx.job_id: ctx for ctx in contexts}
    groups: dict[int, list[ImageWork]] = defaultdict(list)
    for image in images:
        if image.latents is None:
            groups[image.start].append(image)

    def progress(step: int, total: int) -> None:
        for job_id, ctx in list(alive.items()):
            try:
                ctx.on_step(step, total)
            except StageAborted:
                del alive[job_id]  # canceled: its images are finished but not kept
        if not alive:
            raise StageAborted("every job of the batch was canceled")

    # After running out of accelerator memory, a job's retry draws one image at a time.
    chunk = min((ctx.max_batch or len(images)) for ctx in contexts)
    runs = [
        (start, group[i : i + chunk])
        for start, group in sorted(groups.items())
        for i in range(0, len(group), chunk)
    ]
    # Each run may give way between its steps (to interactive work) where it holds every image
    # of its jobs (a job's images resume together): its latents so far are kept, runs before it
    # are done, runs after it wait their turn. A batch of jobs that gave way at different steps
    # is several runs, and one of them may last as long as a whole batch.
    split = chunk < len(images)  # only after running out of memory: one job, drawn piecemeal
    should_yield = None if split else contexts[0].should_yield
    gave_way: dict[str, int] = {}  # job -> the step its run stopped at (or never began from)
    for n, (start, group) in enumerate(runs):
        in_run = {id(image) for image in group}
        jobs = {image.ctx.job_id for image in group}
        whole = all(id(image) in in_run for image in images if image.ctx.job_id in jobs)
        result = denoise_batch(
            parts,
            [image.item for image in group],
            steps=first.steps,
            height=first.height,
            width=first.width,
            guidance=first.guidance,
            strength=first.strength,
            sampler=first.scheduler,
            resume=torch.cat([image.resume for image in group]) if start else None,  # type: ignore[misc]
            resume_step=start,
            keep_steps=keep if start == 0 else (),
            on_step=progress,
            # A canceled job's images leave the batch at the next step.
            dropped=lambda group=group: [  # type: ignore[misc]
                row for row, image in enumerate(group) if image.ctx.job_id not in alive
            ],
            should_yield=should_yield if whole else None,
        )
        if result.yielded_at is not None:
            _keep_for_later(group, result.latents, result.yielded_at, alive)
            gave_way = dict.fromkeys(jobs, result.yielded_at)
            for later_start, later in runs[n + 1 :]:
                gave_way |= dict.fromkeys((image.ctx.job_id for image in later), later_start)
            break
        for row, image in enumerate(group):
            image.latents = result.latents[row : row + 1]
            image.kept = {step: latents[row : row + 1] for step, latents in result.kept.items()}

    # 3. Per job: its latents, its record, and the cache entries its fresh images make.
    results: Results = {}
    for ctx in contexts:
        if ctx.job_id not in alive:
            results[ctx.job_id] = StageAborted("canceled")
            continue
        if ctx.job_id in gave_way:
            results[ctx.job_id] = StageYielded(gave_way[ctx.job_id])
            continue
        mine = [image for image in images if image.ctx is ctx]
        results[ctx.job_id] = _job_result(
            ctx, mine, pooled[ctx.job_id], semantic_key, len(contexts), len(images)
        )
    return results


def _resume_key(job_id: str) -> str:
    return job_key(job_id, "denoise-resume.safetensors")


def _resume_where_it_gave_way(ctx: StageContext, images: list[ImageWork]) -> None:
    """Images of a job whose denoise gave way start from the latents it left, and its step."""
    uri = ctx.runtime.store.uri(_resume_key(ctx.job_id))
    if not ctx.runtime.store.exists(uri):
        return
    saved = ctx.runtime.load_tensors(uri)
    step = int(saved["step"].item())
    for image in images:
        image.resume = saved["latents"][image.index : image.index + 1]
        image.start, image.resumed = step, True


def _keep_for_later(
    group: list[ImageWork], latents: torch.Tensor, step: int, alive: dict[str, StageContext]
) -> None:
    """Keep the latents after ``step`` steps of each job of a run that gave way, in the store,
    for its next run to go on from (a job of a run that never began keeps what it had)."""
    for job_id, ctx in alive.items():
        rows = [row for row, image in enumerate(group) if image.ctx.job_id == job_id]
        if rows:
            tensors = {"latents": latents[rows], "step": torch.tensor([step])}
            ctx.runtime.save_tensors(_resume_key(job_id), tensors)


def _job_result(
    ctx: StageContext,
    images: list[ImageWork],
    pooled: torch.Tensor | None,
    semantic_key: str,
    batch_jobs: int,
    batch_images: int,
) -> StageResult:
    runtime = ctx.runtime
    finals: list[torch.Tensor] = []
    for image in images:
        assert image.latents is not None, "every image was either drawn or found in the cache"
        finals.append(image.latents)
    latents = torch.cat(finals)
    uri = runtime.save_tensors(job_key(ctx.job_id, "latents.safetensors"), {"latents": latents})
    entries = new_entries(ctx, images, finals, pooled, semantic_key)
    used = [image.hit_entry for image in images if image.hit_entry is not None]
    record = cache_record(images, ctx.spec.steps, batch_jobs, batch_images)

    def persist(session: Session, job_id: str) -> None:
        session.add_all(entries)
        latent_cache.mark_used(session, used)

    output = DenoiseOutput(latents=uri, cache=record)
    return StageResult(output, persist, artifacts={uri: {"latents": latents}})
