"""Adherence of the shapes model: does each image show the colour, shape and background asked?

    python -m bench.quality [--model FOLDER] [--steps 10,25,50] [--guidance 4]

Three tables, every image read by the checker in ``imggen.shapes`` (exact on rendered scenes):

1. Every scene of the grammar (224) at fixed seeds, through the stages in-process, at several
   step counts: the model's own quality.
2. The same scenes through the queue (embedded SQLite, one worker), semantic cache off and on:
   what approximate caching costs in quality.
3. Paraphrases the model never saw ("a cherry-red ball on a cloud-white field"), through the
   queue with the expand stage's mapping off (canonical prompts off), by the colour table and
   the sentence embedder, with the dictionary (WordNet, where installed), and with the language
   model too (``--language-model``).
   ``bench.language`` gives each source's share of the mapping alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import imggen
from imggen.shapes import PRETRAINED, Scene, adherence, all_scenes, caption, parse_caption
from imggen.shapes.dictionary import installed_dictionary
from imggen.stages.denoise import DenoiseItem, denoise_batch
from migrations import upgrade
from testbed.deployments import embedded
from worker.process import start_worker, stop_worker

PARTS = ("colour", "shape", "background")

# Words the shapes model never saw, for each word of its world. The vocabulary mapping does not
# know these lists; they only generate the test prompts.
COLOUR_WORDS = {
    "red": ["cherry-red", "crimson", "scarlet", "ruby", "blood-red", "tomato"],
    "green": ["emerald", "grass-green", "lime", "forest-green", "jade", "leafy"],
    "blue": ["navy", "cobalt", "sapphire", "azure", "royal-blue", "ocean-blue"],
    "yellow": ["lemon", "mustard", "canary", "golden", "sunflower", "butter-yellow"],
    "purple": ["violet", "plum", "amethyst", "grape", "mauve", "lilac"],
    "orange": ["tangerine", "pumpkin", "apricot", "amber", "carrot", "marigold"],
    "white": ["snow", "ivory", "cloud-white", "milk-white", "chalk", "pearl"],
    "black": ["coal-black", "midnight", "ebony", "jet-black", "inky", "pitch-black"],
}
SHAPE_WORDS = {
    "circle": ["ball", "disc", "dot", "orb", "round shape"],
    "square": ["box", "block", "tile", "cube", "square shape"],
    "triangle": ["pyramid", "three-sided shape", "arrowhead", "triangular sign", "wedge"],
    "cross": ["plus sign", "plus symbol", "swiss cross", "plus", "cross mark"],
}
GROUNDS = ["field", "backdrop", "canvas", "wall", "surface", "ground"]
TEMPLATES = [
    "a {c} {s} on a {b} {g}",
    "{c} {s}, {b} {g}",
    "a {c} {s} against a {b} {g}",
    "{c} {s} over a {b} {g}",
]


def paraphrase(scene: Scene, rng: random.Random, templates: Sequence[str] = TEMPLATES) -> str:
    return rng.choice(templates).format(
        c=rng.choice(COLOUR_WORDS[scene.colour]),
        s=rng.choice(SHAPE_WORDS[scene.shape]),
        b=rng.choice(COLOUR_WORDS[scene.background]),
        g=rng.choice(GROUNDS),
    )


def rates(images: Sequence[Image.Image], scenes: Sequence[Scene]) -> dict[str, float]:
    """Share of images right on each part, and on all three."""
    readings = [adherence(image, scene) for image, scene in zip(images, scenes, strict=True)]
    names = [*(f"adherence_{part}" for part in PARTS), "adherence"]
    return {name: statistics.mean(r[name] for r in readings) for name in names}


def _row(label: str, values: dict[str, float], *extra: str) -> str:
    cells = [f"{values[f'adherence_{part}']:.1%}" for part in PARTS] + [
        f"{values['adherence']:.1%}"
    ]
    return "| " + " | ".join([label, *cells, *extra]) + " |"


def in_process(
    model: Path, scenes: Sequence[Scene], steps_list: Sequence[int], guidance: float
) -> dict[int, dict[str, float]]:
    parts = imggen.load_components(model, "cpu")
    prompts = [caption(scene) for scene in scenes]
    embeddings = {prompt: imggen.encode_prompt(parts, prompt) for prompt in set(prompts)}
    results = {}
    for steps in steps_list:
        images: list[Image.Image] = []
        for start in range(0, len(scenes), 56):
            chunk = range(start, min(start + 56, len(scenes)))
            items = [DenoiseItem(embeddings[prompts[i]], seed=i) for i in chunk]
            latents = denoise_batch(
                parts, items, steps=steps, height=64, width=64, guidance=guidance
            ).latents
            images += imggen.decode(parts, latents)
        results[steps] = rates(images, scenes)
    return results


def through_queue(
    home: Path,
    model: Path,
    prompts: Sequence[str],
    scenes: Sequence[Scene],
    *,
    steps: int,
    guidance: float,
    seeds: Sequence[int] | None = None,
    **settings: str,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One job per prompt through a worker; adherence is read against the scene the prompt
    stands for (not the prompt the expand stage made of it)."""
    home.mkdir(parents=True)
    dep = embedded(home.name, home, model, **settings)
    upgrade(dep.settings.resolved_database_url)
    with (home / "worker.log").open("wb") as log:
        process = start_worker(env=dep.env, log=log, loglevel="WARNING")
        try:
            handles = [
                dep.client.submit(
                    prompt,
                    n=1,
                    seed=seeds[i] if seeds else i,
                    steps=steps,
                    width=64,
                    height=64,
                    guidance=guidance,
                )
                for i, prompt in enumerate(prompts)
            ]
            infos = [handle.wait(timeout=3600) for handle in handles]
        finally:
            stop_worker(process)
    failed = [info for info in infos if info["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[0]['error']}")
    images = [Image.open(info["images"][0]["uri"]) for info in infos]
    return rates(images, scenes), infos


def _cache_columns(infos: Sequence[dict[str, Any]], steps: int) -> list[str]:
    caches = [info["cache"] or {} for info in infos]
    hits = sum(bool(cache.get("semantic_hits")) for cache in caches)
    unet = sum(cache.get("unet_steps", steps) for cache in caches)
    return [f"{hits}", f"{1 - unet / (steps * len(infos)):.0%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PRETRAINED)
    parser.add_argument("--steps", default="10,25,50", help="step counts for table 1")
    parser.add_argument("--queue-steps", type=int, default=25, help="steps of tables 2 and 3")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--scenes", type=int, default=0, help="first N scenes only (0: all)")
    parser.add_argument("--only", choices=("steps", "cache", "paraphrases"), action="append")
    parser.add_argument(
        "--language-model", type=Path, default=None, help="the imported SmolLM2, for table 3"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    scenes = all_scenes()[: args.scenes or None]
    steps_list = [int(s) for s in args.steps.split(",")]
    only = set(args.only or ("steps", "cache", "paraphrases"))
    print(
        f"# bench.quality, {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, model {args.model}, {len(scenes)} scenes, "
        f"guidance {args.guidance}, 64x64, seed = scene index\n"
    )
    header = "| {} | colour | shape | background | all three |{}"
    if "steps" in only:
        print("### 1. Every scene, in-process, by step count (DDIM)\n")
        print(header.format("steps", ""))
        print("|---:|---:|---:|---:|---:|")
        for steps, values in in_process(args.model, scenes, steps_list, args.guidance).items():
            print(_row(str(steps), values))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "cache" in only:
            print(
                f"\n### 2. Every scene through the queue, {args.queue_steps} steps, "
                "semantic cache off / on\n"
            )
            print(header.format("semantic cache", " semantic hits | UNet steps saved |"))
            print("|---|---:|---:|---:|---:|---:|---:|")
            prompts = [caption(scene) for scene in scenes]
            for label, flag in (("off", "false"), ("on", "true")):
                values, infos = through_queue(
                    root / f"cache-{label}",
                    args.model,
                    prompts,
                    scenes,
                    steps=args.queue_steps,
                    guidance=args.guidance,
                    semantic_cache=flag,
                )
                print(_row(label, values, *_cache_columns(infos, args.queue_steps)))
        if "paraphrases" in only:
            rng = random.Random(0)
            prompts = [paraphrase(scene, rng) for scene in scenes]
            print(
                f'\n### 3. Paraphrases (e.g. "{prompts[0]}"), {args.queue_steps} steps, '
                "vocabulary mapping\n"
            )
            print(header.format("mapping", " prompt mapped to the right caption |"))
            print("|---|---:|---:|---:|---:|---:|")
            runs = {
                "off": {"canonical_prompts": "false"},
                "table + embedder": {"expand_model": "none", "wordnet": "none"},
            }
            if installed_dictionary() is not None:
                runs["table + dictionary + embedder"] = {"expand_model": "none"}
            if args.language_model is not None:
                runs["all, with the language model"] = {"expand_model": str(args.language_model)}
            for label, extra in runs.items():
                values, infos = through_queue(
                    root / f"para-{label.replace(' ', '')}",
                    args.model,
                    prompts,
                    scenes,
                    steps=args.queue_steps,
                    guidance=args.guidance,
                    **extra,
                )
                right = statistics.mean(
                    parse_caption(info["expanded_prompt"]) == scene
                    for info, scene in zip(infos, scenes, strict=True)
                )
                print(_row(label, values, f"{right:.1%}"))


if __name__ == "__main__":
    main()
