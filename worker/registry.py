"""What this worker host can serve, written to SQL (the model registry ``producer.registry``
reads): the default model and each folder under the models folder of a family imggen runs,
with its native size, samplers and the LoRA adapters of ``loras/``.

Read from the folders' JSON files only, never their weights. A folder imggen cannot run is
written with the reason (and said in the log), so a job for it is refused at submit with it.
Written at start and again whenever the models or adapters folder changes (their listing's
modification times).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from producer.catalog import native_size, read_json
from producer.db import in_transaction
from producer.models import RegistryEntry, utcnow
from worker.first_imports import first_use
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_NAME = 200  # RegistryEntry.model's length, as Job.model's


def scan(settings: WorkerSettings) -> list[dict[str, Any]]:
    """The models this host serves, each as the columns of its registry row."""
    from imggen.errors import InvalidInput
    from imggen.families import family_of, read_config

    loras = settings.resolved_loras_dir
    adapters = sorted(p.stem for p in loras.glob("*.safetensors")) if loras.is_dir() else []
    root = settings.resolved_models_dir
    names = [settings.default_model]
    if root.is_dir():
        names += sorted(
            folder.name
            for folder in root.iterdir()
            if (folder / "model_index.json").is_file() and folder.name != settings.default_model
        )
    rows = []
    for name in names:
        if len(name) > MAX_NAME:
            log.warning("model %s is not served: its name is over %d characters", name, MAX_NAME)
            continue
        folder = Path(settings.model_path(name))
        row: dict[str, Any] = {"model": name, "family": "", "samplers": [], "adapters": []}
        try:
            family = family_of(folder)
            row["pipeline"] = str(read_config(folder).get("_class_name"))
        except InvalidInput as exc:
            log.warning("model %s is not served: %s", name, exc)
            index = read_json(folder / "model_index.json") or {}
            # Said to API callers at submit: the model's name, never the server's folder.
            reason = str(exc).replace(str(folder), name).removeprefix("model: ")
            row |= {"pipeline": str(index.get("_class_name", ""))[:100], "refused": reason}
            rows.append(row)
            continue
        size = native_size(settings, name)
        row |= {
            "family": family.name,
            "native_width": size[0] if size else None,
            "native_height": size[1] if size else None,
            "samplers": list(family.samplers),
            "adapters": adapters,
            "refused": None,
        }
        rows.append(row)
    return rows


class Registry:
    """Keeps this host's registry rows in step with its folders."""

    def __init__(self, settings: WorkerSettings, hostname: str) -> None:
        self.settings, self.hostname = settings, hostname
        self._seen: tuple[object, ...] | None = None

    def _fingerprint(self) -> tuple[object, ...]:
        def mtime(path: Path) -> int | None:
            try:
                return path.stat().st_mtime_ns
            except OSError:
                return None

        settings = self.settings
        return (
            settings.default_model,
            mtime(settings.resolved_models_dir),
            mtime(settings.resolved_loras_dir),
        )

    def refresh(self) -> bool:
        """Rescan and rewrite this host's rows if the folders changed; whether it did."""
        fingerprint = self._fingerprint()
        if fingerprint == self._seen:
            return False
        with first_use("registry"):  # its imports apart from a first stage's
            rows = scan(self.settings)
        names = [row["model"] for row in rows]

        def write(session: Any) -> None:
            session.execute(
                delete(RegistryEntry).where(
                    RegistryEntry.hostname == self.hostname, RegistryEntry.model.not_in(names)
                )
            )
            now = utcnow()
            for row in rows:
                session.merge(RegistryEntry(hostname=self.hostname, updated_at=now, **row))

        try:
            in_transaction(self.settings.resolved_database_url, write)
        except IntegrityError:
            # Another process of this host inserted the same rows first: write over them.
            in_transaction(self.settings.resolved_database_url, write)
        self._seen = fingerprint
        return True
