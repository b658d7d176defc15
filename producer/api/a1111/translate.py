"""AUTOMATIC1111 ``txt2img`` / ``img2img`` requests as imggen job fields, and refusals in that API's
shapes.

The request model lists every field A1111's own API takes, so clients that send them all (as
``webuiapi`` does) are understood; each is honoured, accepted where A1111 itself ignores it in
that request, or refused when it asks for something imggen does not do. The limits are JobSpec's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.api.a1111.extra_networks import lora_tags

# A1111's sampler names (and aliases) -> imggen's samplers; the scheduler "karras" picks the
# Karras-sigma variant where imggen has one.
SAMPLERS: dict[str, tuple[str, list[str]]] = {
    "Euler a": ("euler_a", ["k_euler_a", "k_euler_ancestral"]),
    "Euler": ("euler", ["k_euler"]),
    "DDIM": ("ddim", ["ddim"]),
    "DPM++ 2M": ("dpmpp_2m", ["k_dpmpp_2m"]),
    "DPM++ 2M Karras": ("dpmpp_2m_karras", ["k_dpmpp_2m_ka"]),
    "UniPC": ("unipc", ["unipc"]),
    "LCM": ("lcm", ["k_lcm"]),
}
KARRAS = {"dpmpp_2m": "dpmpp_2m_karras"}
SCHEDULERS = {"automatic": "Automatic", "karras": "Karras"}


class A1111Error(Exception):
    """An answer in A1111's error shapes: 422 ``{"detail": [...]}`` for fields, otherwise
    ``{"error", "detail", "body", "errors"}`` as its API middleware writes."""

    def __init__(
        self,
        status: int,
        detail: Any,
        *,
        headers: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.headers, self.job_id = status, detail, headers or {}, job_id

    def body(self) -> dict[str, Any]:
        if self.status == 422:
            return {"detail": self.detail}
        body = {"error": "HTTPException", "detail": self.detail, "body": "", "errors": str(self)}
        return body | ({"job_id": self.job_id} if self.job_id else {})


def field_errors(errors: dict[str, str]) -> A1111Error:
    """422 naming each field, in FastAPI's shape (A1111's own for bad fields)."""
    detail = [
        {"loc": ["body", field], "msg": reason, "type": "value_error"}
        for field, reason in errors.items()
    ]
    return A1111Error(422, detail)


class Txt2ImgRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Honoured.
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    sampler_name: str | None = None
    sampler_index: str | None = None  # deprecated alias, used when sampler_name is absent
    scheduler: str | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    # Accepted: imggen keeps every image in its store, and these change nothing here.
    save_images: bool = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings_restore_afterwards: bool = True
    force_task_id: str | None = None
    comments: dict[str, Any] | None = None
    disable_extra_networks: bool = False
    # Hires fix: refused when enabled; its settings are ignored otherwise, as A1111 does.
    enable_hr: bool = False
    denoising_strength: float | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_additional_modules: list[str] | None = None
    # Refused unless left at the value that asks for nothing (see NEUTRAL).
    styles: list[str] = Field(default_factory=list)
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    restore_faces: bool | None = False
    tiling: bool | None = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    firstpass_image: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] = Field(default_factory=list)
    denoising_strength: float | None = 0.75
    resize_mode: int = 0
    include_init_images: bool = False
    # Pix2pix models only, which imggen does not serve: ignored, as A1111 does for others.
    image_cfg_scale: float | None = None
    # Inpainting: refused with a mask; its settings are ignored without one, as A1111 does.
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    mask_round: bool | None = None
    inpainting_fill: int | None = None
    inpaint_full_res: bool | int | None = None
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: int | None = None
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None


# field -> values that ask for nothing imggen would not do (None is always one).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "enable_hr": (False,),
    "styles": ([],),
    "subseed_strength": (0.0,),
    "seed_resize_from_h": (-1, 0),
    "seed_resize_from_w": (-1, 0),
    "restore_faces": (False,),
    "tiling": (False,),
    "eta": (0.0, 1.0),  # A1111's defaults for DDIM and for ancestral samplers
    "s_min_uncond": (0.0,),
    "s_churn": (0.0,),
    "s_tmax": (0.0,),
    "s_tmin": (0.0,),
    "s_noise": (1.0,),
    "refiner_checkpoint": ("",),
    "refiner_switch_at": (0.0,),
    "script_name": ("",),
    "script_args": ([],),
    "alwayson_scripts": ({},),
    "infotext": ("",),
    "firstpass_image": ("",),
    "resize_mode": (0,),
    "include_init_images": (False,),
    "mask": ("",),
    "latent_mask": ("",),
    "initial_noise_multiplier": (1.0,),
}


def parse_request(data: Any, model: type[Txt2ImgRequest]) -> Txt2ImgRequest:
    if not isinstance(data, dict):
        raise field_errors({"body": "must be a JSON object"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "body"
            reason = (
                "not a field of this API" if error["type"] == "extra_forbidden" else error["msg"]
            )
            errors.setdefault(field, reason)
        raise field_errors(errors) from None


def _refuse_what_imggen_does_not_do(request: Txt2ImgRequest) -> None:
    given = request.model_dump()
    errors = {
        field: f"imggen does not support {field}={given[field]!r}"
        for field, neutral in NEUTRAL.items()
        if field in given and given[field] is not None and given[field] not in neutral
    }
    extra_settings = set(request.override_settings) - {"sd_model_checkpoint"}
    if extra_settings:
        errors["override_settings"] = (
            f"only sd_model_checkpoint can be overridden, not {', '.join(sorted(extra_settings))}"
        )
    if errors:
        raise field_errors(errors)


def sampler(request: Txt2ImgRequest) -> str | None:
    """imggen's sampler for the request's sampler_name and scheduler (None: the model's own).
    Raises A1111Error: 404 for an unknown sampler, as A1111 answers, 422 for a scheduler."""
    name = request.sampler_name or request.sampler_index
    chosen = None
    if name:
        chosen = next(
            (ours for title, (ours, aliases) in SAMPLERS.items() if name in (title, *aliases)),
            None,
        )
        if chosen is None:
            raise A1111Error(404, f"Sampler not found: {name!r} (GET /sdapi/v1/samplers)")
    schedule = (request.scheduler or "automatic").lower()
    if schedule == "automatic":
        return chosen
    if schedule == "karras" and chosen in KARRAS:
        return KARRAS[chosen]
    if schedule == "karras" and chosen in KARRAS.values():
        return chosen
    raise field_errors(
        {"scheduler": f"{request.scheduler!r} is not available with sampler {name!r}"}
    )


def job_fields(request: Txt2ImgRequest) -> tuple[dict[str, Any], bytes | None]:
    """The imggen job fields (names as JobSpec's) and the input image, for a valid request."""
    _refuse_what_imggen_does_not_do(request)
    try:
        prompt, loras = lora_tags(request.prompt)
    except ValueError as exc:
        raise field_errors({"prompt": str(exc)}) from None
    fields: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": request.negative_prompt,
        "steps": request.steps,
        "guidance": request.cfg_scale,
        "width": request.width,
        "height": request.height,
        "n": request.batch_size * request.n_iter,
        "scheduler": sampler(request),
    }
    if loras:
        fields["loras"] = loras
    if request.seed != -1:
        fields["seed"] = request.seed
    checkpoint = request.override_settings.get("sd_model_checkpoint")
    if checkpoint is not None:
        fields["model"] = checkpoint
    image = None
    if isinstance(request, Img2ImgRequest):
        if len(request.init_images) != 1:
            raise field_errors({"init_images": "give exactly one image (base64)"})
        image = _decode_image(request.init_images[0])
        if request.denoising_strength is not None:
            fields["strength"] = request.denoising_strength
    return fields, image


def _decode_image(data: str) -> bytes:
    # Clients send plain base64 or a data URL ("data:image/png;base64,...").
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise field_errors({"init_images": "not valid base64"}) from None


# imggen's field -> the A1111 field that set it.
_FIELDS = {
    "guidance": "cfg_scale",
    "n": "batch_size",
    "strength": "denoising_strength",
    "scheduler": "sampler_name",
    "model": "override_settings.sd_model_checkpoint",
    "image": "init_images",
    "has_input_image": "init_images",
}


def invalid(errors: dict[str, str]) -> A1111Error:
    """A JobSpec refusal, with the fields named as this API names them."""
    return field_errors({_a1111_field(field): reason for field, reason in errors.items()})


def _a1111_field(field: str) -> str:
    # LoRA come from the prompt's <lora:…> tags: a bad one is the prompt's fault.
    return "prompt" if field.split(".")[0] == "loras" else _FIELDS.get(field, field)
