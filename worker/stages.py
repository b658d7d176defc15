"""The worker side of each stage: read inputs from SQL and the store, call imggen, say what to keep.

Each function takes a StageContext and returns a StageResult; it commits nothing itself (the
runner commits the result under the stage's lease).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

import imggen
from producer.artifacts import job_key
from producer.models import Image, Job, Metric
from producer.spec import JobSpec
from worker.runtime import Runtime


@dataclass
class StageContext:
    job_id: str
    spec: JobSpec
    model: str
    outputs: dict[str, dict[str, Any]]  # earlier stages' outputs, by stage name
    runtime: Runtime
    on_step: Callable[[int, int], None]  # progress, lease renewal, cancellation

    def seeds(self) -> list[int]:
        return [self.spec.seed + i for i in range(self.spec.n)]


@dataclass
class StageResult:
    output: dict[str, Any]
    persist: Callable[[Session, Job], None] | None = None


def expand(ctx: StageContext) -> StageResult:
    expansion = imggen.expand(ctx.spec.prompt)

    def persist(session: Session, job: Job) -> None:
        job.expanded_prompt = expansion.prompt

    return StageResult({"prompt": expansion.prompt, "expanded": expansion.expanded}, persist)


def encode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    embeddings = imggen.encode_prompt(
        parts, ctx.outputs["expand"]["prompt"], ctx.spec.negative_prompt
    )
    key = job_key(ctx.job_id, "embeddings.safetensors")
    return StageResult({"embeddings": ctx.runtime.save_tensors(key, embeddings.to_tensors())})


def denoise(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    tensors = ctx.runtime.load_tensors(ctx.outputs["encode"]["embeddings"])
    latents = imggen.denoise(
        parts,
        imggen.PromptEmbeddings.from_tensors(tensors),
        seeds=ctx.seeds(),
        steps=ctx.spec.steps,
        height=ctx.spec.height,
        width=ctx.spec.width,
        guidance=ctx.spec.guidance,
        on_step=ctx.on_step,
    )
    key = job_key(ctx.job_id, "latents.safetensors")
    return StageResult({"latents": ctx.runtime.save_tensors(key, {"latents": latents})})


def decode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    latents = ctx.runtime.load_tensors(ctx.outputs["denoise"]["latents"])["latents"]
    images = imggen.decode(parts, latents)
    uris = [
        ctx.runtime.store.put(job_key(ctx.job_id, f"image-{i}.png"), imggen.png_bytes(image))
        for i, image in enumerate(images)
    ]
    seeds = ctx.seeds()

    def persist(session: Session, job: Job) -> None:
        for index, (uri, image) in enumerate(zip(uris, images, strict=True)):
            session.add(
                Image(
                    job_id=job.id,
                    index=index,
                    uri=uri,
                    width=image.width,
                    height=image.height,
                    seed=seeds[index],
                )
            )

    return StageResult({"images": uris}, persist)


def score(ctx: StageContext) -> StageResult:
    from imggen.stages.score import METRIC_VERSION

    scores = [
        imggen.score(PILImage.open(ctx.runtime.load_image_bytes(uri)))
        for uri in ctx.outputs["decode"]["images"]
    ]

    def persist(session: Session, job: Job) -> None:
        images = {image.index: image for image in job.images}
        for index, metrics in enumerate(scores):
            for name, value in metrics.items():
                session.add(
                    Metric(image_id=images[index].id, name=name, value=value, model=METRIC_VERSION)
                )

    return StageResult({"metrics": len(scores)}, persist)


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], StageResult]] = {
    "expand": expand,
    "encode": encode,
    "denoise": denoise,
    "decode": decode,
    "score": score,
}
