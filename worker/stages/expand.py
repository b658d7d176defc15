"""The expand stage: the prompt the later stages draw (a caption of the input image when there
is none, expanded by a language model when asked, rewritten into the model's canonical form)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

import imggen
from producer.models import Job
from producer.stage_outputs import ExpandOutput
from worker.stages.context import StageContext, StageResult


def expand(ctx: StageContext) -> StageResult:
    settings, runtime = ctx.runtime.settings, ctx.runtime
    notes: list[str] = []
    # 1. The prompt: the user's, or a caption of the input image.
    prompt, caption = ctx.spec.prompt, None
    if prompt is None:
        captioner, image = runtime.captioner(), ctx.input_image()
        if captioner is None or image is None:
            raise imggen.InvalidInput(
                "prompt: none given, and no caption model is configured (IMGGEN_CAPTION_MODEL)"
            )
        prompt = caption = imggen.caption(captioner, image)

    # 2. The expansion, when the job asks for one and the deployment has a language model. A
    # shapes model draws its grammar only: there the language model helps map (step 3).
    shapes = runtime.draws_shapes(ctx.model)
    canonical = settings.canonical_prompts
    maps = shapes and canonical is not False
    expander = runtime.expander() if ctx.spec.expand or maps else None
    if ctx.spec.expand and expander is None:
        notes.append("expand skipped: no expand model (imggen models import smollm2)")
    expansion, cached = imggen.expand(prompt), False
    if ctx.spec.expand and expander is not None and not shapes:
        expansion, cached = runtime.expansions.get_or_compute(
            (
                expander.model_id,
                ctx.model,
                expansion.original,
                ctx.spec.seed,
                settings.expand_max_new_tokens,
                tuple(settings.expand_words() or ()),
            ),
            lambda: imggen.expand(
                expansion.original,
                expander,
                seed=ctx.spec.seed,
                max_new_tokens=settings.expand_max_new_tokens,
                allowed_words=settings.expand_words(),
                fits=runtime.token_budget(ctx.model),
            ),
        )

    # 3. The canonical form the caches key on: for a shapes model, a caption of its grammar.
    prompt, mapped, mapped_by = expansion.prompt, False, []
    if maps:
        mapping = runtime.vocabulary_map().map(prompt)
        if mapping is None:
            notes.append("vocabulary mapping skipped: the prompt names no figure and ground")
        else:
            prompt, mapped, mapped_by = mapping.prompt, mapping.changed, list(mapping.sources)
    elif canonical:
        prompt = imggen.canonical_text(prompt)
    used_lm = expansion.expanded or "language model" in mapped_by

    def persist(session: Session, job_id: str) -> None:
        session.execute(
            update(Job).where(Job.id == job_id).values(caption=caption, expanded_prompt=prompt)
        )

    output = ExpandOutput(
        original=expansion.original,
        prompt=prompt,
        expanded=expansion.expanded,
        mapped=mapped,
        mapped_by=mapped_by,
        caption=caption,
        expander=expander.model_id if expander and used_lm else None,
        cached=cached,
        notes=notes,
    )
    return StageResult(output, persist)
