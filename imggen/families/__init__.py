"""Model families: what a diffusers folder's pipeline class means for each stage.

A family says which text encoders a folder has and how a prompt becomes the UNet's
conditioning; the denoise loop, the VAE and the schedulers are shared. The family is read from
``model_index.json``'s ``_class_name`` and the parts' configs are checked before any weights
load, so a folder imggen cannot run is refused in milliseconds, as invalid input that no retry
will mend, with the class or setting that does not fit in the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imggen.errors import ModelNotFound, UnsupportedModel
from imggen.families.base import Family
from imggen.families.sd import StableDiffusion
from imggen.families.sd3 import StableDiffusion3
from imggen.families.sdxl import StableDiffusionXL

FAMILIES: dict[str, Family] = {
    f.name: f for f in (StableDiffusion(), StableDiffusionXL(), StableDiffusion3())
}


def read_config(root: Path, part: str | None = None) -> dict[str, Any]:
    """``model_index.json`` (``part`` None) or a part's ``config.json`` / scheduler config."""
    if part is None:
        path = root / "model_index.json"
    elif part == "scheduler":
        path = root / part / "scheduler_config.json"
    else:
        path = root / part / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"model: unreadable {path.relative_to(root)} in {root}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelNotFound(f"model: {path.relative_to(root)} in {root} is not a JSON object")
    return config


def family_of(root: Path) -> Family:
    """The family of the diffusers folder ``root``, its parts' configs checked to fit.

    Raises ModelNotFound without a readable ``model_index.json``, UnsupportedModel for a
    pipeline class no family runs or parts that do not fit it.
    """
    index = read_config(root)
    name = index.get("_class_name")
    for family in FAMILIES.values():
        if name in family.pipelines:
            family.check({part: read_config(root, part) for part in family.parts(index)}, index)
            return family
    runs = ", ".join(sorted(p for f in FAMILIES.values() for p in f.pipelines))
    raise UnsupportedModel(f"model: {name!r} is not a pipeline imggen runs (it runs {runs})")


__all__ = ["FAMILIES", "Family", "family_of", "read_config"]
