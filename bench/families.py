"""Model families side by side: whether imggen's staged path draws what diffusers' own pipeline
draws on the same folder, and what each stage of one job costs through a real worker.

    python -m bench.families [--jobs 5] [--steps 20] [--size 64]

1. Same image: for each family (tiny random-weight folders, built here), sampler and negative
   prompt, and with a LoRA, imggen's encode, denoise and decode as separate calls, the
   embeddings and latents through safetensors as the worker stores them, against diffusers'
   pipeline with the same noise: the largest latent and pixel (0-255) differences.
2. Per-stage times: ``--jobs`` jobs per family through one worker on the embedded default (SQLite
   and Celery over SQLite), each stage's median ``duration_s`` as the job's view reports it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load, save

import imggen
from bench.common import Table, print_table
from imggen.adapters import Adapter, use_adapters
from imggen.samplers import SAMPLERS
from imggen.tiny import make_tiny, make_tiny_lora, make_tiny_sd3, make_tiny_sdxl
from testbed.deployments import embedded, with_worker

PROMPT = "a lighthouse on a cliff at dusk"
FAMILIES = {"sd": make_tiny, "sdxl": make_tiny_sdxl, "sd3": make_tiny_sd3}


def _through_store(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return load(save({name: t.contiguous() for name, t in tensors.items()}))


def same_image(folders: dict[str, Path], loras: dict[str, Path], steps: int, size: int) -> Table:
    rows = []
    cases: list[tuple[str | None, str, bool]] = [
        (None, "", False),
        (None, "blurry, dark", False),
        ("dpmpp_2m", "blurry, dark", False),
        ("euler_a", "", False),
        (None, "", True),
    ]
    for family, folder in folders.items():
        parts = imggen.load_components(folder, "cpu")
        pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        default_scheduler = pipe.scheduler
        pipe.load_lora_weights(
            str(loras[family].parent), weight_name=loras[family].name, adapter_name="ink"
        )
        for sampler, negative, with_lora in cases:
            if sampler is not None and sampler not in parts.family.samplers:
                continue
            adapters = [Adapter("ink", loras[family], 0.8)] if with_lora else []
            use_adapters(parts, adapters)
            if with_lora:
                pipe.enable_lora()
                pipe.set_adapters(["ink"], [0.8])
            else:
                pipe.disable_lora()
            pipe.scheduler = (
                default_scheduler
                if sampler is None
                else SAMPLERS[sampler][0].from_config(
                    default_scheduler.config, **SAMPLERS[sampler][1]
                )
            )
            seed = 7
            embeddings = imggen.PromptEmbeddings.from_tensors(
                _through_store(imggen.encode_prompt(parts, PROMPT, negative).to_tensors())
            )
            latents = imggen.denoise(
                parts,
                embeddings,
                seeds=[seed],
                steps=steps,
                height=size,
                width=size,
                guidance=5.0,
                sampler=sampler,
            )
            latents = _through_store({"latents": latents})["latents"]
            ours = np.asarray(imggen.decode(parts, latents)[0], dtype=np.int32)
            channels = parts.latent_channels
            noise = torch.randn(
                (1, channels, size // 8, size // 8),
                generator=torch.Generator("cpu").manual_seed(seed),
            )
            common: dict[str, Any] = {
                "prompt": PROMPT,
                "negative_prompt": negative or None,
                "num_inference_steps": steps,
                "guidance_scale": 5.0,
                "height": size,
                "width": size,
                "latents": noise,
            }
            if sampler == "euler_a":  # imggen's per-image step noise stream
                common["generator"] = torch.Generator("cpu").manual_seed(seed ^ 0x5A5A5A5A)
            theirs_latents = pipe(**common, output_type="latent").images
            if sampler == "euler_a":
                common["generator"] = torch.Generator("cpu").manual_seed(seed ^ 0x5A5A5A5A)
            theirs = np.asarray(pipe(**common, output_type="pil").images[0], dtype=np.int32)
            rows.append(
                [
                    family,
                    sampler or f"own ({type(default_scheduler).__name__})",
                    repr(negative) if negative else "-",
                    "ink @ 0.8" if with_lora else "-",
                    f"{float((latents - theirs_latents).abs().max()):.1e}",
                    str(int(np.abs(ours - theirs).max())),
                ]
            )
    return Table(
        f"1. imggen's staged path against diffusers' pipeline ({steps} steps, {size}x{size}, CFG 5)",
        ["family:", "sampler:", "negative:", "LoRA:", "max latent diff", "max pixel diff"],
        rows,
    )


def stage_times(models: Path, folders: dict[str, Path], jobs: int, steps: int, size: int) -> Table:
    with tempfile.TemporaryDirectory() as tmp:
        dep = embedded("families", Path(tmp), folders["sd"], models_dir=str(models))
        times: dict[tuple[str, str], list[float]] = defaultdict(list)
        log = (Path(tmp) / "worker.log").open("wb")  # not over the tables
        for _ in with_worker(dep, log=log):
            client = dep.client
            for family in folders:
                if family != "sd":
                    dep.registered(family)
            for i in range(jobs + 1):  # the first job of each family loads its model
                for family in folders:
                    for lora in ([], [{"name": f"{family}-ink", "weight": 0.8}]):
                        fields = {"n": 2, "seed": i, "steps": steps, "width": size, "height": size}
                        model = None if family == "sd" else family
                        view = client.submit(
                            PROMPT, model=model, loras=lora, cache=False, **fields
                        ).wait(timeout=300)
                        assert view["status"] == "succeeded", view["error"]
                        if i == 0:
                            continue
                        label = family + (" + LoRA" if lora else "")
                        for stage in view["stages"]:
                            times[(label, stage["stage"])].append(stage["duration_s"] * 1000)
        log.close()
    labels = list(dict.fromkeys(label for label, _ in times))
    stages = ["expand", "encode", "denoise", "decode", "score"]
    rows = [
        [label, *(f"{statistics.median(times[(label, s)]):.0f}" for s in stages)]
        for label in labels
    ]
    return Table(
        f"2. Per-stage ms through one worker, embedded default, median of {jobs} jobs "
        f"(2 images, {steps} steps, {size}x{size}; the model's first job left out)",
        ["job:", *stages],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        folders = {family: make(models / family) for family, make in FAMILIES.items()}
        loras = {
            family: make_tiny_lora(models / "loras", folder, f"{family}-ink", seed=1)
            for family, folder in folders.items()
        }
        print_table(same_image(folders, loras, args.steps, args.size))
        print_table(stage_times(models, folders, args.jobs, args.steps, args.size))


if __name__ == "__main__":
    main()
