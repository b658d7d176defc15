"""The expand stage: the prompt the later stages draw (a caption of the input image when there
is none, expanded by a language model when asked, mapped onto a small model's words)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

import imggen
from producer.models import Job
from producer.stage_outputs import ExpandOutput
from worker.stages.context import StageContext, StageResult


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

    output = ExpandOutput(
        original=expansion.original,
        prompt=prompt,
        expanded=expansion.expanded,
        mapped=mapped,
        caption=caption,
        expander=expander.model_id if expander else None,
        notes=notes,
    )
    return StageResult(output, persist)
