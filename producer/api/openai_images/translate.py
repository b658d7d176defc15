"""OpenAI Images API requests as imggen job fields, and imggen's refusals in that API's error shape.

The request models only check shape and type; every limit is JobSpec's, so a request is refused
for the same reasons as on ``/v1/jobs``, with the field named as this API names it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from producer.catalog import ServedModel
from producer.errors import InvalidJobSpec
from producer.spec import parse_size

RESPONSE_FORMATS = ("b64_json", "url")
DEFAULT_RESPONSE_FORMAT = "b64_json"  # as OpenAI's current image models; links expire

# Fields imggen accepts only where it does what the value asks: name -> values that match
# imggen's behaviour (a field left out, or null, always does). Anything else is refused the way
# OpenAI refuses an unsupported value, never ignored.
SUPPORTED_VALUES: dict[str, tuple[Any, ...]] = {
    "quality": ("auto", "standard"),
    "background": ("auto", "opaque"),
    "output_format": ("png",),
    "stream": (False,),
    "partial_images": (0,),
    "style": (),
    "moderation": (),  # imggen moderates nothing: a deployment that must, does it in front
    "output_compression": (),
    "complexity": (),
    "frame_count": (),
    "frame_duration_ms": (),
    "svg": (),
    "input_fidelity": (),
    "mask": (),
    "markup": (),
}


class OpenAIError(Exception):
    """An answer in the OpenAI error shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the API's own name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body: dict[str, Any] = {
            "message": message,
            "type": type,
            "param": param,
            "code": code,
        }
        if job_id is not None:
            self.body["job_id"] = job_id


class ImageRequest(BaseModel):
    """The fields of ``POST /v1/images/generations`` (and, as form fields, of ``edits``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    stream: bool | None = None
    partial_images: int | None = None
    style: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    complexity: str | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    svg: Any = None
    input_fidelity: str | None = None


def parse_request(data: dict[str, Any]) -> ImageRequest:
    """The request, or OpenAIError naming the first field that is unknown or of the wrong type."""
    try:
        return ImageRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "extra_forbidden":
            raise OpenAIError(
                400,
                f"Unrecognized request argument supplied: {field}",
                param=field,
                code="unknown_parameter",
            ) from None
        if error["type"] == "missing":
            raise OpenAIError(
                400,
                f"Missing required parameter: '{field}'.",
                param=field,
                code="missing_required_parameter",
            ) from None
        raise OpenAIError(
            400, f"Invalid type for '{field}': {error['msg']}.", param=field, code="invalid_type"
        ) from None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A JSON object body, or OpenAIError as OpenAI answers a body it cannot parse."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise OpenAIError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        )
    return data


def _quote(values: tuple[Any, ...]) -> str:
    names = [json.dumps(v) if not isinstance(v, str) else f"'{v}'" for v in values]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + f" and {names[-1]}"


def refuse_unsupported(data: dict[str, Any]) -> None:
    """OpenAIError for the first field whose value imggen cannot honour."""
    for field, supported in SUPPORTED_VALUES.items():
        value = data.get(field)
        if value is None or value in supported:
            continue
        shown = value if isinstance(value, str | int | float | bool) else type(value).__name__
        hint = (
            f"Supported values are: {_quote(supported)}."
            if supported
            else f"imggen does not support '{field}'; leave it out."
        )
        raise OpenAIError(
            400, f"Invalid value: '{shown}'. {hint}", param=field, code="invalid_value"
        )


def job_fields(request: ImageRequest, model: ServedModel) -> tuple[dict[str, Any], str]:
    """The imggen job fields and the response format a valid request asks for."""
    refuse_unsupported(request.model_dump())
    response_format = request.response_format or DEFAULT_RESPONSE_FORMAT
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(
            400,
            f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
            param="response_format",
            code="invalid_value",
        )
    fields: dict[str, Any] = {"prompt": request.prompt, "model": model.id}
    if request.n is not None:
        fields["n"] = request.n
    if request.size not in (None, "auto"):
        try:
            fields["width"], fields["height"] = parse_size(request.size)
        except InvalidJobSpec as exc:
            raise invalid(exc.errors) from None
    elif model.native_size is not None:
        fields["width"], fields["height"] = model.native_size
    user = request.user or request.safety_identifier
    if user is not None:
        fields["user"] = user
    return fields, response_format


# imggen's field -> the parameter of this API that set it.
_PARAMS = {"width": "size", "height": "size", "has_input_image": "image"}


def invalid(errors: dict[str, str]) -> OpenAIError:
    """A JobSpec refusal (field -> reason) as OpenAI's invalid request error."""
    field, reason = next(iter(errors.items()))
    param = _PARAMS.get(field, field)
    return OpenAIError(400, f"Invalid '{param}': {reason}", param=param, code="invalid_value")
