"""The exact and semantic latent caches: keys, lookups, and what to store after a run.

Rows live in SQL (``latent_cache``), tensors in the artifact store. Exact entries are final
latents of one image under a key that fixes everything deciding it; semantic entries are
intermediate latents of finished images, found by prompt similarity (NIRVANA, NSDI 2024).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from producer.models import LatentCacheEntry, utcnow
from producer.spec import LoraRef
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    import torch

CANDIDATES = 2000  # most recent semantic entries compared per lookup


def _digest(parts: list[object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(model: str, loras: Sequence[LoraRef]) -> str:
    """What keys the model in the caches: the model and its adapters at their weights."""
    if not loras:
        return model
    return model + "".join(f"+{lora.name}@{lora.weight:g}" for lora in loras)


def exact_key(
    model: str,
    scheduler: str,
    prompt: str,
    negative: str,
    seed: int,
    width: int,
    height: int,
    steps: int,
    guidance: float,
) -> str:
    return _digest(
        ["exact", model, scheduler, prompt, negative, seed, width, height, steps, guidance]
    )


def semantic_key(
    model: str, scheduler: str, width: int, height: int, steps: int, guidance: float
) -> str:
    return _digest(["semantic", model, scheduler, width, height, steps, guidance])


def kept_steps(settings: WorkerSettings, steps: int) -> list[int]:
    """The step counts whose latents are stored for the semantic cache."""
    return sorted(
        {
            k
            for _, fraction in settings.semantic_levels
            if 0 < (k := round(fraction * steps)) < steps
        }
    )


@dataclass
class SemanticHit:
    entry_id: int
    latent_uri: str
    step: int
    similarity: float
    source_job_id: str | None


def find_exact(session: Session, keys: list[str]) -> dict[str, LatentCacheEntry]:
    rows = session.scalars(
        select(LatentCacheEntry).where(
            LatentCacheEntry.kind == "exact", LatentCacheEntry.key.in_(keys)
        )
    ).all()
    return {row.key: row for row in rows}


def find_semantic(
    session: Session,
    settings: WorkerSettings,
    key: str,
    steps: int,
    embedding: torch.Tensor,
    count: int,
    exclude_job: str,
) -> list[SemanticHit]:
    """Up to ``count`` cached latents of distinct earlier images, most similar prompt first."""
    rows = session.scalars(
        select(LatentCacheEntry)
        .where(LatentCacheEntry.kind == "semantic", LatentCacheEntry.key == key)
        .order_by(LatentCacheEntry.last_used_at.desc())
        .limit(CANDIDATES)
    ).all()
    if not rows:
        return []
    import numpy as np  # here, not at the top: the sweeper imports this module to evict

    query = embedding.float().flatten().numpy()
    query = query / (np.linalg.norm(query) or 1.0)
    by_source: dict[tuple[str | None, int], dict[int, LatentCacheEntry]] = {}
    similarity: dict[tuple[str | None, int], float] = {}
    for row in rows:
        if row.source_job_id == exclude_job or row.embedding is None:
            continue
        source = (row.source_job_id, row.source_image)
        by_source.setdefault(source, {})[row.step] = row
        if source not in similarity:
            vector = np.frombuffer(row.embedding, dtype=np.float32)
            similarity[source] = float(vector @ query / (np.linalg.norm(vector) or 1.0))
    hits = []
    for source in sorted(similarity, key=similarity.__getitem__, reverse=True)[:count]:
        step = _level(settings, similarity[source], steps)
        entry = by_source[source].get(step) if step is not None else None
        if step is not None and entry is not None:
            hits.append(
                SemanticHit(
                    entry.id, entry.latent_uri, step, similarity[source], entry.source_job_id
                )
            )
    return hits


def _level(settings: WorkerSettings, similarity: float, steps: int) -> int | None:
    """Steps that may be skipped at this similarity (the first level it reaches), or None."""
    for threshold, fraction in settings.semantic_levels:
        if similarity >= threshold:
            step = round(fraction * steps)
            return step if 0 < step < steps else None
    return None


def mark_used(session: Session, entry_ids: list[int]) -> None:
    """Count a hit on each entry (once, however many images of the job it served)."""
    if not entry_ids:
        return
    session.execute(
        update(LatentCacheEntry)
        .where(LatentCacheEntry.id.in_(sorted(set(entry_ids))))
        .values(hits=LatentCacheEntry.hits + 1, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def evict(session: Session, max_entries: int) -> list[str]:
    """Delete the least recently used rows beyond ``max_entries``; returns their latent URIs."""
    count = session.scalar(select(func.count()).select_from(LatentCacheEntry)) or 0
    if count <= max_entries:
        return []
    oldest = session.execute(
        select(LatentCacheEntry.id, LatentCacheEntry.latent_uri)
        .order_by(LatentCacheEntry.last_used_at)
        .limit(count - max_entries)
    ).all()
    session.execute(
        delete(LatentCacheEntry).where(LatentCacheEntry.id.in_([row.id for row in oldest]))
    )
    return [row.latent_uri for row in oldest]
