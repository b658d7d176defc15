"""The caches around one denoise run: each image looked up before it, the entries its fresh
images make after it, and the job's record of what the caches saved.

An exact hit reuses an identical earlier image's final latents; a semantic hit resumes from a
similar prompt's intermediate latent (see ``latent_cache.py`` for the keys and the SQL).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy.orm import Session

from imggen.stages.denoise import DenoiseItem
from producer.artifacts import job_key
from producer.models import LatentCacheEntry
from producer.stage_outputs import CacheRecord, ExpandOutput
from worker.stages import latent_cache
from worker.stages.context import StageContext
from worker.stages.runtime import Runtime


@dataclass
class ImageWork:
    """One image of one job in a denoise run: where it starts, and what it ends with."""

    ctx: StageContext
    index: int
    item: DenoiseItem
    start: int = 0  # steps already done (a semantic hit, or a run that gave way)
    resume: torch.Tensor | None = None
    resumed: bool = False  # ``start`` steps were done by an earlier run of this job, not saved
    latents: torch.Tensor | None = None  # the final latents, once known
    hit: str | None = None  # "exact" or "semantic"
    hit_entry: int | None = None
    similarity: float | None = None
    exact_key: str | None = None
    kept: dict[int, torch.Tensor] = field(default_factory=dict)


def set_exact_keys(images: list[ImageWork], scheduler: str) -> None:
    for image in images:
        spec, ctx = image.ctx.spec, image.ctx
        image.exact_key = latent_cache.exact_key(
            latent_cache.model_identity(ctx.model, spec.loras),
            scheduler,
            ctx.outputs.get(ExpandOutput).prompt,
            spec.negative_prompt,
            image.item.seed,
            spec.width,
            spec.height,
            spec.steps,
            spec.guidance,
        )


def look_up(
    session: Session,
    runtime: Runtime,
    usable: list[ImageWork],
    pooled: dict[str, torch.Tensor | None],
    semantic_key: str,
) -> None:
    """Find each image's cached latents (exact, else semantic); ``usable``: the cache is on."""
    settings = runtime.settings
    if settings.exact_cache:
        found = latent_cache.find_exact(
            session, [image.exact_key for image in usable if image.exact_key]
        )
        for image in usable:
            entry = found.get(image.exact_key or "")
            if entry is not None and runtime.store.exists(entry.latent_uri):
                image.latents = runtime.load_tensors(entry.latent_uri)["latents"]
                image.hit, image.hit_entry = "exact", entry.id
    if settings.semantic_cache:
        by_job: dict[str, list[ImageWork]] = defaultdict(list)
        for image in usable:
            if image.latents is None:
                by_job[image.ctx.job_id].append(image)
        for job_id, waiting in by_job.items():
            embedding = pooled[job_id]
            if embedding is None:
                continue
            spec = waiting[0].ctx.spec
            hits = latent_cache.find_semantic(
                session,
                settings,
                semantic_key,
                spec.steps,
                embedding,
                len(waiting),
                exclude_job=job_id,
            )
            for image, hit in zip(waiting, hits, strict=False):
                if runtime.store.exists(hit.latent_uri):
                    image.resume = runtime.load_tensors(hit.latent_uri)["latents"]
                    image.start, image.hit, image.hit_entry = hit.step, "semantic", hit.entry_id
                    image.similarity = round(hit.similarity, 4)


def new_entries(
    ctx: StageContext,
    images: list[ImageWork],
    finals: list[torch.Tensor],
    pooled: torch.Tensor | None,
    semantic_key: str,
) -> list[LatentCacheEntry]:
    """The cache entries a job's fresh images make (their tensors are written to the store)."""
    runtime, spec = ctx.runtime, ctx.spec
    entries: list[LatentCacheEntry] = []
    if not spec.cache:
        return entries
    embedding = (
        pooled.float().flatten().numpy().astype(np.float32).tobytes()
        if pooled is not None
        else None
    )
    for image, final in zip(images, finals, strict=True):
        if image.hit == "exact":
            continue  # already stored under this very key
        # A resubmission gets what this job got, even when that came from a semantic hit.
        if runtime.settings.exact_cache and image.exact_key:
            stored = runtime.save_tensors(
                f"cache/exact/{image.exact_key}.safetensors", {"latents": final}
            )
            entries.append(
                LatentCacheEntry(
                    kind="exact",
                    key=image.exact_key,
                    step=spec.steps,
                    latent_uri=stored,
                    source_job_id=ctx.job_id,
                    source_image=image.index,
                )
            )
        for step, kept in image.kept.items():
            stored = runtime.save_tensors(
                job_key(ctx.job_id, f"cache/{image.index}-{step}.safetensors"),
                {"latents": kept},
            )
            entries.append(
                LatentCacheEntry(
                    kind="semantic",
                    key=semantic_key,
                    step=step,
                    embedding=embedding,
                    latent_uri=stored,
                    source_job_id=ctx.job_id,
                    source_image=image.index,
                )
            )
    return entries


def cache_record(
    images: list[ImageWork], steps: int, batch_jobs: int, batch_images: int
) -> CacheRecord:
    skipped = [
        steps if image.hit == "exact" else 0 if image.resumed else image.start for image in images
    ]
    return CacheRecord(
        exact_hits=sum(image.hit == "exact" for image in images),
        semantic_hits=sum(image.hit == "semantic" for image in images),
        skipped_steps=skipped,
        similarity=[image.similarity for image in images],
        steps_saved=sum(skipped),
        unet_steps=steps * len(images) - sum(skipped),
        batch_jobs=batch_jobs,
        batch_images=batch_images,
        resumed_from=next((image.start for image in images if image.resumed), None),
    )
