"""The encode stage: the prompt's embeddings (which also key the caches), and the input image's
latents for image-to-image."""

from __future__ import annotations

from typing import Any

import imggen
from producer.artifacts import job_key
from producer.stage_outputs import EncodeOutput, ExpandOutput
from worker.stages.context import StageContext, StageResult


def encode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model, ctx.spec.loras)  # text encoder LoRA too
    prompt = ctx.outputs.get(ExpandOutput).prompt
    embeddings = imggen.encode_prompt(parts, prompt, ctx.spec.negative_prompt)
    tensors = embeddings.to_tensors()
    uri = ctx.runtime.save_tensors(job_key(ctx.job_id, "embeddings.safetensors"), tensors)
    artifacts: dict[str, Any] = {uri: tensors}
    image_uri = None
    image = ctx.input_image()
    if image is not None:
        latents = {"latents": imggen.encode_image(parts, image, ctx.spec.height, ctx.spec.width)}
        image_uri = ctx.runtime.save_tensors(
            job_key(ctx.job_id, "image-latents.safetensors"), latents
        )
        artifacts[image_uri] = latents
    output = EncodeOutput(embeddings=uri, image_latents=image_uri)
    return StageResult(output, artifacts=artifacts)
