"""The job contract: every limit is enforced with an error that names the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from imggen.shapes import PRETRAINED, WORLD_FILE
from producer.catalog import MARKER_FILE, native_size
from producer.errors import InvalidJobSpec
from producer.settings import Settings
from producer.spec import (
    MAX_IMAGES,
    MAX_SEED,
    JobSpec,
    parse_lora,
    parse_size,
    validate_spec,
    with_native_size,
)

VALID: dict[str, Any] = {
    "prompt": "a red fox",
    "n": 2,
    "seed": 7,
    "steps": 4,
    "width": 64,
    "height": 64,
}


def test_a_valid_spec_keeps_its_values_and_fills_defaults() -> None:
    spec = validate_spec(VALID)
    assert (spec.prompt, spec.n, spec.seed, spec.steps, spec.width, spec.height) == (
        "a red fox",
        2,
        7,
        4,
        64,
        64,
    )
    assert spec.guidance == 7.5 and spec.negative_prompt == "" and spec.expand is False


def test_a_missing_seed_is_drawn_once_and_kept() -> None:
    spec = validate_spec({"prompt": "a fox"})
    assert 0 <= spec.seed <= MAX_SEED
    assert JobSpec.model_validate(spec.model_dump()).seed == spec.seed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"width": 63}, "width"),
        ({"height": 8}, "height"),
        ({"width": 4096}, "width"),
        ({"steps": 0}, "steps"),
        ({"steps": 1000}, "steps"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"n": MAX_IMAGES + 1}, "n"),
        ({"n": 0}, "n"),
        ({"seed": -1}, "seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"guidance": -1.0}, "guidance"),
        ({"model": "../etc"}, "model"),
        ({"model": "a b"}, "model"),
        ({"colour": "red"}, "colour"),
        ({"steps": "many"}, "steps"),
        ({"lane": "express"}, "lane"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"loras": [{"name": "../x"}]}, "loras.0.name"),
        ({"loras": [{"name": "ink", "weight": 4.5}]}, "loras.0.weight"),
        ({"loras": [{"name": "ink"}, {"name": "ink"}]}, "loras"),
        ({"loras": [{"name": f"l{i}"} for i in range(5)]}, "loras"),
        ({"loras": [{"name": "ink", "strength": 1}]}, "loras.0.strength"),
        ({"loras": "ink"}, "loras"),
    ],
)
def test_bad_fields_are_rejected_by_name(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobSpec) as caught:
        validate_spec(VALID | change)
    assert list(caught.value.errors) == [field]
    assert field in str(caught.value)


def test_several_bad_fields_are_all_named() -> None:
    with pytest.raises(InvalidJobSpec) as caught:
        validate_spec(VALID | {"width": 63, "steps": 0})
    assert set(caught.value.errors) == {"width", "steps"}


def test_width_error_says_why() -> None:
    with pytest.raises(InvalidJobSpec, match="width: must be a multiple of 8"):
        validate_spec(VALID | {"width": 63})


def test_parse_size() -> None:
    assert parse_size("640x480") == (640, 480)
    with pytest.raises(InvalidJobSpec, match="size"):
        parse_size("640by480")


def test_parse_lora() -> None:
    assert parse_lora("ink") == {"name": "ink"}
    assert parse_lora("ink:0.6") == {"name": "ink", "weight": 0.6}
    with pytest.raises(InvalidJobSpec, match="loras"):
        parse_lora("ink:strong")


def test_the_shipped_shapes_model_gets_its_own_size_unless_the_job_names_one(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path)  # no models folder: "shapes" is the shipped model
    assert Path(settings.model_path("shapes")) == PRETRAINED
    shapes, missing = native_size(settings, "shapes"), native_size(settings, "sd-1.5")
    unsized = validate_spec({"prompt": "a red circle on a white background"})
    assert (unsized.width, unsized.height) == (512, 512)
    native = with_native_size(unsized, shapes)
    assert (native.width, native.height) == (64, 64)
    assert with_native_size(unsized, missing) is unsized
    sized = with_native_size(validate_spec({"prompt": "x", "width": 128, "height": 96}), shapes)
    assert (sized.width, sized.height) == (128, 96)


def test_a_model_folder_declares_its_native_size_in_its_marker_file(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "wide"
    shutil.copytree(PRETRAINED, folder)  # its UNet alone would say 64x64
    marker = json.loads((folder / WORLD_FILE).read_text())
    (folder / WORLD_FILE).write_text(json.dumps(marker | {"native_size": [96, 48]}))
    assert native_size(Settings(home=tmp_path), "wide") == (96, 48)
    assert WORLD_FILE == MARKER_FILE  # the producer reads what imggen writes


def test_jobs_batch_together_only_with_the_same_adapters_at_the_same_weights() -> None:
    from producer.jobs import batch_key

    def key(**change: Any) -> str:
        return batch_key(validate_spec(VALID | change), "tiny")

    ink = [{"name": "ink", "weight": 0.5}]
    assert key() == key(loras=[])
    assert key(loras=ink) == key(loras=ink)
    assert len({key(), key(loras=ink), key(loras=[{"name": "ink", "weight": 0.6}])}) == 3
