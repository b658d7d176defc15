"""The score stage: quality metrics per image (prompt alignment, faithfulness to an input image,
adherence for the shapes world), and best of N."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

import imggen
from imggen.shapes import adherence, parse_caption
from imggen.shapes.checker import CHECKER_VERSION
from imggen.stages.score import METRIC_VERSION, best_of, clip_scores, reference_metrics
from producer.models import Image, Metric
from producer.stage_outputs import DecodeOutput, ExpandOutput, ScoreOutput
from worker.stages.context import StageContext, StageResult


def score(ctx: StageContext) -> StageResult:
    notes: list[str] = []
    expanded = ctx.outputs.get(ExpandOutput)
    images = [ctx.runtime.load_image(uri) for uri in ctx.outputs.get(DecodeOutput).images]
    scores: list[dict[str, float]] = [imggen.score(image) for image in images]  # one per image
    measured_by = dict.fromkeys(scores[0], METRIC_VERSION)  # metric name -> what measured it

    # 1. Prompt alignment, against the user's own words (or the caption they stood for).
    clip = ctx.runtime.clip()
    if clip is None:
        notes.append("clip_score skipped: no CLIP model configured (IMGGEN_CLIP_MODEL)")
    else:
        aligned = clip_scores(clip, images, expanded.original)
        for image_scores, value in zip(scores, aligned, strict=True):
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
        scene = parse_caption(expanded.prompt)
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

    output = ScoreOutput(metrics=sorted(measured_by), kept=kept, notes=notes)
    return StageResult(output, persist)
