"""The job contract: what a producer may ask for, with limits checked before anything is written.

The same model is read back by the worker (from the job row's JSON), so the rules live once, here.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from producer.callbacks import check_callback_url
from producer.errors import InvalidJobSpec

MAX_PROMPT_CHARS = 1000
MAX_SIDE = 2048
MIN_SIDE = 16
MAX_IMAGES = 8
MAX_STEPS = 150
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0
MAX_PRIORITY = 9
MAX_LORAS = 4
MAX_LORA_WEIGHT = 4.0


# Samplers a job may name instead of its model's own scheduler (built by imggen.samplers, which
# lists the same names).
Lane = Literal["interactive", "bulk"]
LANES: tuple[str, ...] = get_args(Lane)
Scheduler = Literal["ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lcm"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)

# Measured against the input image: image-to-image only.
REFERENCE_METRICS = frozenset({"mse", "psnr", "ssim"})

RANKABLE_METRICS = frozenset(
    {
        "adherence",
        "clip_score",
        "sharpness",
        "contrast",
        "colorfulness",
        "entropy",
        "mse",
        "psnr",
        "ssim",
    }
)


class LoraRef(BaseModel):
    """A LoRA adapter of the deployment's (``loras/NAME.safetensors`` in the models folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    weight: float = Field(default=1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT)


class JobSpec(BaseModel):
    """One generation request. Image ``i`` of a job is drawn with seed ``seed + i``.

    An image-to-image job comes with an input image (validated and stored by the client, never
    named by the user as a path); its prompt may then be left out, and a model captions the image.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    has_input_image: bool = False
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS, validate_default=True)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    seed: int = Field(default_factory=lambda: secrets.randbelow(MAX_SEED + 1), ge=0, le=MAX_SEED)
    steps: int = Field(default=25, ge=1, le=MAX_STEPS)
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    guidance: float = Field(default=7.5, ge=0.0, le=MAX_GUIDANCE)
    scheduler: Scheduler | None = None
    """The sampler; None: the model's own scheduler."""
    model: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._/-]+$")
    loras: tuple[LoraRef, ...] = Field(default=(), max_length=MAX_LORAS)
    """LoRA adapters applied to the model, each at its weight; jobs batch with the same set."""
    expand: bool = False
    strength: float = Field(default=0.75, gt=0.0, le=1.0)
    keep_best: int | None = Field(default=None, ge=1, le=MAX_IMAGES)
    rank_by: str = "clip_score"
    cache: bool = True
    callback_url: str | None = Field(default=None, max_length=2000)
    callback_events: Literal["terminal", "all"] = "terminal"
    user: str | None = Field(default=None, max_length=200)
    """The caller's own id for its end user, recorded with the job (OpenAI's ``user``)."""
    lane: Lane = "interactive"
    """``interactive`` work is taken before ``bulk`` work at every stage."""
    priority: int = Field(default=0, ge=0, le=MAX_PRIORITY)
    """Within a lane, higher first."""

    @field_validator(
        "prompt", "negative_prompt", "model", "callback_url", "user", "rank_by", mode="before"
    )
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_storable(value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if not info.data.get("has_input_image"):
                raise ValueError("required unless an input image is given")
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("rank_by")
    @classmethod
    def _known_metric(cls, value: str, info: ValidationInfo) -> str:
        if value not in RANKABLE_METRICS:
            raise ValueError(f"must be one of {', '.join(sorted(RANKABLE_METRICS))}")
        if (
            value in REFERENCE_METRICS
            and info.data.get("keep_best") is not None
            and not info.data.get("has_input_image")
        ):
            raise ValueError(f"{value} is measured against an input image, and there is none")
        return value

    @field_validator("callback_url")
    @classmethod
    def _public_http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # At the producer edge (validate_spec) the context carries the deployment's allowed
        # hosts; a spec read back from its row was checked when it was submitted.
        if value is not None and info.context is not None:
            check_callback_url(value, info.context.get("allowed_callback_hosts", ()))
        return value

    @field_validator("keep_best")
    @classmethod
    def _keep_at_most_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > info.data.get("n", MAX_IMAGES):
            raise ValueError(f"must not exceed n ({info.data.get('n')})")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        # The VAE downsamples by 8: other sizes would be silently cropped.
        if value % 8:
            raise ValueError(f"must be a multiple of 8 (got {value})")
        return value

    @field_validator("loras")
    @classmethod
    def _each_once(cls, value: tuple[LoraRef, ...]) -> tuple[LoraRef, ...]:
        names = [lora.name for lora in value]
        if len(set(names)) < len(names):
            raise ValueError("names an adapter more than once")
        return value

    @field_validator("model")
    @classmethod
    def _no_parent_dirs(cls, value: str | None) -> str | None:
        if value is not None and ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value


def check_storable(text: str) -> None:
    """Raise ValueError for text a database cannot store: NUL characters (PostgreSQL's text
    refuses them) and lone surrogates (no UTF-8 encoding exists)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None


def parse_lora(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME:WEIGHT`` as a ``loras`` entry; raises InvalidJobSpec naming ``loras``."""
    name, colon, weight = text.rpartition(":")
    if not colon:
        return {"name": text}
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise InvalidJobSpec({"loras": f"{text!r}: expected NAME or NAME:WEIGHT"}) from None


def parse_size(size: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``; raises InvalidJobSpec naming ``size``."""
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise InvalidJobSpec({"size": f"expected WIDTHxHEIGHT, got {size!r}"}) from None
    return width, height


def validate_spec(data: dict[str, Any], allowed_callback_hosts: Collection[str] = ()) -> JobSpec:
    """Build a JobSpec from untrusted data; raises InvalidJobSpec naming every bad field.

    ``callback_url`` must be public unless its host is one of ``allowed_callback_hosts``.
    """
    context = {"allowed_callback_hosts": allowed_callback_hosts}
    try:
        return JobSpec.model_validate(data, context=context)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            loc = error["loc"]
            field = ".".join(str(part) for part in loc) if loc else "spec"
            message = error["msg"].removeprefix("Value error, ")
            errors.setdefault(field, message)
        raise InvalidJobSpec(errors) from None


def with_native_size(spec: JobSpec, native: tuple[int, int] | None) -> JobSpec:
    """``spec`` with the model's native (width, height), as its folder declares it, wherever the
    job named none."""
    unset = {"width", "height"} - spec.model_fields_set
    if native is None or not unset:
        return spec
    width, height = native
    return spec.model_copy(update={k: {"width": width, "height": height}[k] for k in unset})
