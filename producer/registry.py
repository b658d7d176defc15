"""The model registry as the producer reads it: what worker hosts say they can serve.

Workers write it (``worker/registry.py``): per host, each model folder of a family imggen runs,
with its native size, the samplers and the LoRA adapters a job may name. Until some worker has
written it (a new deployment, the embedded default before its worker starts), the producer
judges by the models folder and settings alone (``producer.catalog``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from producer.db import in_transaction
from producer.models import RegistryEntry

# How long one read of the registry answers at submit.
FRESH_S = 2.0


@dataclass(frozen=True)
class Registered:
    model: str
    family: str
    pipeline: str
    native_size: tuple[int, int] | None  # (width, height)
    samplers: tuple[str, ...]
    adapters: tuple[str, ...]
    hosts: tuple[str, ...]  # that serve it
    refused: str | None = None  # why no host serves it (every host that has it refused it)


def registered(session: Session) -> dict[str, Registered]:
    """Every registered model, its hosts' entries merged: the hosts that serve it, and their
    samplers and adapters (any host's); where none serves it, why the first one refused it."""
    rows = session.scalars(
        select(RegistryEntry).order_by(RegistryEntry.model, RegistryEntry.hostname)
    ).all()
    by_model: dict[str, list[RegistryEntry]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    merged = {}
    for model, entries in by_model.items():
        serving = [row for row in entries if row.refused is None]
        chosen = serving or entries[:1]
        first = chosen[0]
        sizes = [
            (row.native_width, row.native_height)
            for row in chosen
            if row.native_width is not None and row.native_height is not None
        ]
        merged[model] = Registered(
            model=model,
            family=first.family,
            pipeline=first.pipeline,
            native_size=sizes[0] if sizes else None,
            samplers=tuple(dict.fromkeys(s for row in serving for s in row.samplers)),
            adapters=tuple(sorted({a for row in serving for a in row.adapters})),
            hosts=tuple(row.hostname for row in serving),
            refused=None if serving else first.refused,
        )
    return merged


class RegistryView:
    """The registry read at most every ``FRESH_S``, so that 10,000 bulk rows do not cost 10,000
    reads (a caller refusing a job reads it ``fresh`` first)."""

    def __init__(self, database_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._url, self._clock = database_url, clock
        self._lock = threading.Lock()
        self._read_at = -FRESH_S
        self._models: dict[str, Registered] = {}

    def models(self, *, fresh: bool = False) -> dict[str, Registered]:
        with self._lock:
            if fresh or self._clock() - self._read_at >= FRESH_S:
                self._models = in_transaction(self._url, registered)
                self._read_at = self._clock()
            return self._models
