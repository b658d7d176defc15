"""A job as callers outside the deployment see it: API answers and webhook bodies."""

from __future__ import annotations

import copy
import re
from typing import Any

from producer.artifacts import job_prefix

# An absolute path inside a message: what follows its last slash stays, the folders go.
_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"()]+/)+")


def public_view(view: dict[str, Any]) -> dict[str, Any]:
    """``view`` as callers outside the deployment see it (API answers, webhook bodies): files
    named by their key in the artifact store (``jobs/<id>/image-0.png``), not by where the
    store keeps them, and no server folders in error messages."""
    public = copy.deepcopy(view)
    public["input_image"] = _store_key(public["input_image"], view["id"])
    for image in public["images"]:
        image["uri"] = _store_key(image["uri"], view["id"])
    public["error"] = redact(public["error"])
    for stage in public["stages"]:
        stage["error"] = redact(stage["error"])
    return public


def _store_key(uri: str | None, job_id: str) -> str | None:
    if uri is None:
        return None
    marker = f"{job_prefix(job_id)}/"
    return uri[uri.rindex(marker) :] if marker in uri else uri.rsplit("/", 1)[-1]


def redact(message: str | None) -> str | None:
    return None if message is None else _PATH.sub("…/", message)
