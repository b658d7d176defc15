"""The models this deployment serves, as the API lists them: its default model, the models its
workers registered (``producer.registry``) and each diffusers folder under the models folder.

Read from the folders' JSON files and the registry only (the producer never loads weights).
Where the API runs on a host without the models folder, the registry tells what is served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from producer.db import in_transaction
from producer.registry import Registered, registered
from producer.settings import Settings
from producer.spec import JobSpec

# What an imggen-made model folder declares of itself (imggen.shapes.WORLD_FILE writes it):
# read here as JSON, since the producer never imports imggen.
MARKER_FILE = "imggen_world.json"


@dataclass(frozen=True)
class ServedModel:
    id: str  # what a job names as its model
    pipeline: str | None  # the pipeline class in model_index.json, where the folder is readable
    native_size: tuple[int, int] | None  # (width, height) the model draws by default
    created: int  # the folder's modification time (Unix seconds); 0 where unknown
    default: bool
    # What the registry says (producer.registry); empty until a worker has registered it.
    family: str | None = None  # imggen's family adapter that runs it (sd, sdxl, …)
    samplers: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()  # LoRA a job may name
    workers: tuple[str, ...] = ()  # the hosts that serve it
    refused: str | None = None  # why the workers that have it cannot run it


def served_models(settings: Settings) -> list[ServedModel]:
    """The default model first, then the registered models, the folders under ``models_dir``
    and the configured ``model_names``, by name."""
    default = settings.default_model
    registry = in_transaction(settings.resolved_database_url, registered)
    names = set(settings.model_names) | set(registry)
    root = settings.resolved_models_dir
    if root.is_dir():
        names |= {f.name for f in root.iterdir() if (f / "model_index.json").is_file()}
    names.discard(default)
    described = [_describe(default, settings, default=True)] + [
        _describe(name, settings, default=False) for name in sorted(names)
    ]
    return [_with_registry(model, registry.get(model.id)) for model in described]


def _with_registry(model: ServedModel, entry: Registered | None) -> ServedModel:
    if entry is None:
        return model
    return replace(
        model,
        pipeline=model.pipeline or entry.pipeline,
        native_size=model.native_size or entry.native_size,
        family=entry.family,
        samplers=entry.samplers,
        adapters=entry.adapters,
        workers=entry.hosts,
        refused=entry.refused,
    )


def find_model(settings: Settings, name: str | None) -> ServedModel | None:
    """The served model a request names (None: the default), or None if there is no such model.

    Only the default model may be a path; any other model is a name, so a request can neither
    make workers load an arbitrary folder nor learn which paths exist."""
    wanted = name or settings.default_model
    if wanted != settings.default_model and (
        "/" in wanted or wanted.startswith(".") or "\\" in wanted
    ):
        return None
    entry = in_transaction(settings.resolved_database_url, registered).get(wanted)
    if wanted == settings.default_model:
        found = _describe(wanted, settings, default=True)
    elif (
        wanted in settings.model_names
        or (settings.resolved_models_dir / wanted / "model_index.json").is_file()
    ):
        found = _describe(wanted, settings, default=False)
    elif entry is not None:  # a worker serves it from a folder this host cannot see
        found = ServedModel(wanted, entry.pipeline, entry.native_size, 0, default=False)
    else:
        return None
    return _with_registry(found, entry)


def native_size(settings: Settings, model_id: str) -> tuple[int, int] | None:
    """(width, height) the model draws when a job names no size, where it can be read."""
    return _describe(model_id, settings, default=False).native_size


def _describe(model_id: str, settings: Settings, *, default: bool) -> ServedModel:
    folder = Path(settings.model_path(model_id))
    index = read_json(folder / "model_index.json")
    native = _declared_size(folder) or _native_size(folder)
    try:
        created = int(folder.stat().st_mtime)
    except OSError:
        created = 0
    pipeline = index.get("_class_name") if index else None
    return ServedModel(model_id, pipeline, native, created, default)


def _declared_size(folder: Path) -> tuple[int, int] | None:
    """The size the folder's model declares it draws (its imggen marker file says so)."""
    marker = read_json(folder / MARKER_FILE)
    try:
        width, height = marker["native_size"]  # type: ignore[index]
        return int(width), int(height)
    except (KeyError, TypeError, ValueError):
        return None


def _native_size(folder: Path) -> tuple[int, int] | None:
    """The denoiser's sample size times the VAE's downsampling, as diffusers' pipelines default
    (SD3's transformer counts its sample in latent pixels, as a UNet does)."""
    unet = read_json(folder / "unet" / "config.json") or read_json(
        folder / "transformer" / "config.json"
    )
    vae = read_json(folder / "vae" / "config.json")
    if unet is None or vae is None:
        return None
    try:
        sample = unet["sample_size"]
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        height, width = (sample, sample) if isinstance(sample, int) else sample
        return int(width) * factor, int(height) * factor
    except (KeyError, TypeError, ValueError):  # not a Stable Diffusion layout
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unserved(
    settings: Settings, spec: JobSpec, model: str, served: dict[str, Registered]
) -> dict[str, str]:
    """Why ``spec`` (for ``model``) cannot be served, by field: empty when it can. Judged by
    the registry ``served`` once a worker has written it, else by the folders and settings."""
    if not served:
        if spec.model is not None and find_model(settings, spec.model) is None:
            return {"model": "not a model served here (GET /v1/models lists them)"}
        return {}
    entry = served.get(model)
    if entry is None:
        if spec.model is None:
            return {}  # the deployment's own default: its workers are configured with it
        if settings.unserved_models == "wait" and find_model(settings, model):
            return {}
        return {"model": "no worker serves this model (GET /v1/models lists those served)"}
    if entry.refused is not None:
        return {"model": f"cannot be run here: {entry.refused}"}
    errors: dict[str, str] = {}
    if spec.scheduler is not None and spec.scheduler not in entry.samplers:
        runs = ", ".join(entry.samplers) or "only its own scheduler"
        errors["scheduler"] = f"{spec.scheduler!r} is not a sampler this model runs ({runs})"
    for i, lora in enumerate(spec.loras):
        if lora.name not in entry.adapters:
            have = ", ".join(entry.adapters[:20]) or "none"
            errors[f"loras.{i}.name"] = f"no adapter {lora.name!r} here (adapters: {have})"
    return errors
