"""The worker side of each stage: read inputs from SQL and the store, call imggen, say what to keep.

Each function takes a StageContext and returns a StageResult; it commits nothing itself (the
runner commits the result under the stage's lease).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

import imggen
from imggen.shapes import adherence, parse_caption
from imggen.shapes.checker import CHECKER_VERSION
from imggen.stages.score import METRIC_VERSION, best_of, clip_scores, reference_metrics
from producer.artifacts import job_key
from producer.models import Image, Job, Metric
from producer.spec import JobSpec
from worker.runtime import Runtime


@dataclass
class StageContext:
    job_id: str
    spec: JobSpec
    model: str
    input_image_uri: str | None
    outputs: dict[str, dict[str, Any]]  # earlier stages' outputs, by stage name
    runtime: Runtime
    on_step: Callable[[int, int], None]  # progress, lease renewal, cancellation
    max_batch: int | None = None  # images per denoising batch; None: all of the job's at once

    def seeds(self) -> list[int]:
        return [self.spec.seed + i for i in range(self.spec.n)]

    def input_image(self) -> PILImage.Image | None:
        return self.runtime.load_image(self.input_image_uri) if self.input_image_uri else None


@dataclass
class StageResult:
    output: dict[str, Any]
    persist: Callable[[Session, str], None] | None = None  # (session, job id)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    # What the stage wrote to the store, by URI, in memory: handed to the next stage if this
    # process runs it (see handover.py).
    artifacts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.notes:
            self.output["notes"] = self.notes


def expand(ctx: StageContext) -> StageResult:
    settings = ctx.runtime.settings
    notes: list[str] = []
    # 1. The prompt: the user's, or a caption of the input image.
    prompt, caption = ctx.spec.prompt, None
    if prompt is None:
        captioner, image = ctx.runtime.captioner(), ctx.input_image()
        if captioner is None or image is None:
            raise imggen.InvalidInput(
                "prompt: none given, and no caption model is configured (IMGGEN_CAPTION_MODEL)"
            )
        prompt = caption = imggen.caption(captioner, image)
    # 2. The expansion, when the job asks for one and the deployment has a language model.
    expander = ctx.runtime.expander() if ctx.spec.expand else None
    if ctx.spec.expand and expander is None:
        notes.append("expand skipped: no expand model configured (IMGGEN_EXPAND_MODEL)")
    expansion = imggen.expand(
        prompt,
        expander,
        seed=ctx.spec.seed,
        max_new_tokens=settings.expand_max_new_tokens,
        allowed_words=settings.expand_words(),
    )

    # 3. For a model of the shapes world, the prompt in the world's own words.
    prompt, mapped = expansion.prompt, False
    if ctx.runtime.draws_shapes(ctx.model):
        vocabulary = ctx.runtime.vocabulary_map()
        mapping = vocabulary.map(prompt) if vocabulary else None
        if vocabulary is None:
            notes.append("vocabulary mapping skipped: no sentence embedder (IMGGEN_EMBED_MODEL)")
        elif mapping is None:
            notes.append("vocabulary mapping skipped: the prompt names no figure and ground")
        else:
            prompt, mapped = mapping.prompt, mapping.changed

    def persist(session: Session, job_id: str) -> None:
        session.execute(
            update(Job).where(Job.id == job_id).values(caption=caption, expanded_prompt=prompt)
        )

    output = {
        "original": expansion.original,
        "prompt": prompt,
        "expanded": expansion.expanded,
        "mapped": mapped,
        "caption": caption,
        "expander": expander.model_id if expander else None,
    }
    return StageResult(output, persist, notes)


def encode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    embeddings = imggen.encode_prompt(
        parts, ctx.outputs["expand"]["prompt"], ctx.spec.negative_prompt
    )
    output, artifacts = {}, {}
    tensors = embeddings.to_tensors()
    output["embeddings"] = ctx.runtime.save_tensors(
        job_key(ctx.job_id, "embeddings.safetensors"), tensors
    )
    artifacts[output["embeddings"]] = tensors
    image = ctx.input_image()
    if image is not None:
        latents = {"latents": imggen.encode_image(parts, image, ctx.spec.height, ctx.spec.width)}
        output["image_latents"] = ctx.runtime.save_tensors(
            job_key(ctx.job_id, "image-latents.safetensors"), latents
        )
        artifacts[output["image_latents"]] = latents
    return StageResult(output, artifacts=artifacts)


def decode(ctx: StageContext) -> StageResult:
    parts = ctx.runtime.components(ctx.model)
    latents = ctx.runtime.load_tensors(ctx.outputs["denoise"]["latents"])["latents"]
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

    return StageResult({"images": uris}, persist, artifacts=dict(zip(uris, images, strict=True)))


def score(ctx: StageContext) -> StageResult:
    notes: list[str] = []
    images = [ctx.runtime.load_image(uri) for uri in ctx.outputs["decode"]["images"]]
    scores: list[dict[str, float]] = [imggen.score(image) for image in images]  # one per image
    measured_by = dict.fromkeys(scores[0], METRIC_VERSION)  # metric name -> what measured it

    # 1. Prompt alignment, against the user's own words (or the caption they stood for).
    clip = ctx.runtime.clip()
    if clip is None:
        notes.append("clip_score skipped: no CLIP model configured (IMGGEN_CLIP_MODEL)")
    else:
        prompt = ctx.outputs["expand"]["original"]
        for image_scores, value in zip(scores, clip_scores(clip, images, prompt), strict=True):
            image_scores["clip_score"] = value
        measured_by["clip_score"] = f"clip:{Path(clip.model_id).name}"

    # 2. Faithfulness to the input image, for image-to-image.
    reference = ctx.input_image()
    if reference is not None:
        for image, image_scores in zip(images, scores, strict=True):
            image_scores.update(reference_metrics(image, reference))
        measured_by |= dict.fromkeys(("mse", "psnr", "ssim"), "torchmetrics")

    # 3. Adherence, for models of the shapes world: does the image show what was asked?
    if ctx.runtime.draws_shapes(ctx.model):
        scene = parse_caption(ctx.outputs["expand"]["prompt"])
        if scene is None:
            notes.append("adherence skipped: the prompt is not a caption of the shapes world")
        else:
            for image, image_scores in zip(images, scores, strict=True):
                image_scores.update(adherence(image, scene))
            measured_by |= dict.fromkeys(scores[0].keys() - measured_by.keys(), CHECKER_VERSION)

    # 4. Best of N: the others are kept, marked discarded.
    kept = list(range(len(images)))
    if ctx.spec.keep_best is not None:
        kept, skipped = best_of(scores, ctx.spec.rank_by, ctx.spec.keep_best)
        notes += [skipped] if skipped else []

    def persist(session: Session, job_id: str) -> None:
        connection = session.connection()
        image_ids = dict(
            connection.execute(select(Image.index, Image.id).where(Image.job_id == job_id)).all()
        )
        discarded = [image_ids[index] for index in image_ids if index not in kept]
        if discarded:
            connection.execute(update(Image).where(Image.id.in_(discarded)).values(discarded=True))
        connection.execute(
            insert(Metric),
            [
                {"image_id": image_ids[i], "name": name, "value": value, "model": measured_by[name]}
                for i, image_scores in enumerate(scores)
                for name, value in image_scores.items()
            ],
        )

    return StageResult({"metrics": sorted(measured_by), "kept": kept}, persist, notes)


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], StageResult]] = {
    "expand": expand,
    "encode": encode,
    "decode": decode,
    "score": score,
}
