"""The decode stage: latents through the VAE to PNGs, one image row each."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session

import imggen
from producer.artifacts import job_key
from producer.models import Image
from producer.stage_outputs import DecodeOutput, DenoiseOutput
from worker.stages.context import StageContext, StageResult


def decode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    latents = ctx.runtime.load_tensors(ctx.outputs.get(DenoiseOutput).latents)["latents"]
    images = imggen.decode(parts, latents)
    uris = [
        ctx.runtime.store.put(job_key(ctx.job_id, f"image-{i}.png"), imggen.png_bytes(image))
        for i, image in enumerate(images)
    ]
    rows = [
        {"index": i, "uri": uri, "width": image.width, "height": image.height, "seed": seed}
        for i, (uri, image, seed) in enumerate(zip(uris, images, ctx.seeds(), strict=True))
    ]

    def persist(session: Session, job_id: str) -> None:
        session.connection().execute(insert(Image), [row | {"job_id": job_id} for row in rows])

    artifacts = dict(zip(uris, images, strict=True))
    return StageResult(DecodeOutput(images=uris), persist, artifacts=artifacts)
