"""What language understanding buys: paraphrases mapped right per source, the expand stage's
latency, and the GPU time canonical prompts save.

    python -m bench.language [--language-model FOLDER] [--prompts PartiPrompts.tsv]
                             [--scenes 56] [--only mapping|latency|canonical]

1. **Mapping by source**: every scene of the shapes world (224) in other words, twice: the
   templates of ``bench.quality`` ("ruby ball over a lime surface") and a set in everyday word
   order ("beneath a coal-black sky, a small lemon disc"). The share whose mapping names the
   right colour, shape, background and all three, for the colour table alone, the sentence
   embedder alone, the dictionary (WordNet, where installed) alone, the language model alone,
   and together. No images: table 3 of ``bench.quality`` draws them. Then (1b) each source on
   words that neither the paraphrases nor the mapping use, which tells what generalizes from
   what fits the bench's words.
2. **Expand latency**: p50/p95 of the expand work per prompt: mapping with and without the
   language model; SmolLM2 expanding real prompts (the first PartiPrompts, or built-in ones),
   the first time and from the cache of model outputs; no language model at all.
3. **Canonical prompts**: a paraphrase-heavy workload through the queue (embedded SQLite, one
   worker): each of N scenes asked three times in different words with the same seed, as a
   user rephrasing a request does. UNet steps run and adherence, canonical prompts off and on.

The language model is the imported SmolLM2 (``imggen models import smollm2``), by default the
one in the models folder; without it, its rows are left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import torch

import imggen
from bench.common import Table, print_table
from bench.held_out import held_out_words
from bench.quality import PARTS, paraphrase, through_queue
from imggen.aux_models import LanguageModel, load_sentence_embedder, packaged_sentence_embedder
from imggen.gguf_import import PACKAGED
from imggen.shapes import PRETRAINED, Scene, all_scenes, parse_caption
from imggen.shapes.dictionary import installed_dictionary
from imggen.shapes.vocabulary import VocabularyMap
from producer.settings import get_settings
from worker.stages.runtime import ModelOutputs

# Word orders that do not follow "X on Y"; the words come from bench.quality's lists.
EVERYDAY = [
    "beneath a {b} sky, a small {c} {s}",
    "the colour of {c}: a {s}, on {b}",
    "a {b} {g} with a {c} {s}",
    "a {s} in {c}, set against {b}",
]
REAL_PROMPTS = [
    "a red fox in the snow",
    "a lighthouse on a cliff at dusk",
    "an astronaut riding a horse",
    "a bowl of ramen on a wooden table",
    "a robot reading a book in a library",
]


def everyday(scene: Scene, rng: random.Random) -> str:
    return paraphrase(scene, rng, EVERYDAY)


def vocabulary_maps(language_model: LanguageModel | None) -> dict[str, VocabularyMap]:
    """Each source alone, then together, as far as the machine has them."""
    embedder = load_sentence_embedder(_packaged_embedder(), "cpu")
    likelihood = language_model.likelihood if language_model else None
    dictionary = installed_dictionary()
    sources: dict[str, VocabularyMap] = {
        "colour table alone": VocabularyMap(),
        "sentence embedder alone": VocabularyMap(embedder.embed, colour_table=False),
        "table + embedder": VocabularyMap(embedder.embed),
    }
    if dictionary is not None:
        sources["dictionary alone"] = VocabularyMap(colour_table=False, dictionary=dictionary)
        sources["table + dictionary"] = VocabularyMap(dictionary=dictionary)
        sources["table + dictionary + embedder"] = VocabularyMap(
            embedder.embed, dictionary=dictionary
        )
    if likelihood is not None:
        sources["language model alone"] = VocabularyMap(likelihood=likelihood, colour_table=False)
        sources["table + embedder + language model"] = VocabularyMap(embedder.embed, likelihood)
    if likelihood is not None and dictionary is not None:
        sources["all: table + dictionary + embedder + language model"] = VocabularyMap(
            embedder.embed, likelihood, dictionary=dictionary
        )
    return sources


def mapping_by_source(sources: dict[str, VocabularyMap], scenes: Sequence[Scene]) -> Table:
    sets = {
        "bench.quality templates": [paraphrase(s, random.Random(i)) for i, s in enumerate(scenes)],
        "everyday word order": [everyday(s, random.Random(i)) for i, s in enumerate(scenes)],
    }
    rows = []
    for label, vocabulary in sources.items():
        for set_name, prompts in sets.items():
            right = {part: 0 for part in (*PARTS, "all")}
            started = time.perf_counter()
            for prompt, scene in zip(prompts, scenes, strict=True):
                mapping = vocabulary.map(prompt)
                got = mapping.scene if mapping else None
                for part in PARTS:
                    right[part] += got is not None and getattr(got, part) == getattr(scene, part)
                right["all"] += got == scene
            ms = (time.perf_counter() - started) * 1000 / len(prompts)
            shares = [f"{right[p] / len(scenes):.1%}" for p in (*PARTS, "all")]
            rows.append([label, set_name, *shares, f"{ms:.0f}"])
    return Table(
        f"1. Paraphrases mapped onto the world's words, by source ({len(scenes)} scenes each)",
        ["source:", "paraphrases:", "colour", "shape", "background", "all three", "ms/prompt"],
        rows,
        note=f'e.g. "{sets["bench.quality templates"][0]}", "{sets["everyday word order"][0]}"',
    )


def expand_latency(
    language_model: LanguageModel | None, prompts_file: Path | None, count: int
) -> Table:
    rng = random.Random(1)
    shapes_prompts = [paraphrase(s, rng) for s in rng.sample(all_scenes(), count)]
    embedder = load_sentence_embedder(_packaged_embedder(), "cpu")
    dictionary = installed_dictionary()
    table = "table + dictionary + embedder" if dictionary else "table + embedder"
    cases: list[tuple[str, Sequence[str], Callable[[str], object]]] = [
        (
            f"shapes: {table}",
            shapes_prompts,
            VocabularyMap(embedder.embed, dictionary=dictionary).map,
        ),
    ]
    real = _real_prompts(prompts_file)
    cases.append(("real prompts: no language model", real, imggen.expand))
    if language_model is not None:
        likelihood = language_model.likelihood
        mapping = VocabularyMap(embedder.embed, likelihood, dictionary=dictionary)
        cases.append((f"shapes: {table} + language model", shapes_prompts, mapping.map))
        outputs = ModelOutputs(len(real))

        def expand_cached(prompt: str) -> object:
            return outputs.get_or_compute(
                (prompt, 0), lambda: imggen.expand(prompt, language_model, max_new_tokens=40)
            )

        cases.append(("real prompts: SmolLM2, 40 tokens, first time", real, expand_cached))
        cases.append(("real prompts: SmolLM2, from the cache", real, expand_cached))
    rows = []
    for label, prompts, work in cases:
        times = []
        for prompt in prompts:
            started = time.perf_counter()
            work(prompt)
            times.append((time.perf_counter() - started) * 1000)
        p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[-1]
        rows.append([label, f"{len(prompts)}", f"{p50:.1f}", f"{p95:.1f}"])
    return Table("2. Expand latency per prompt", ["work:", "prompts", "p50 ms", "p95 ms"], rows)


def canonical_savings(model: Path, language_model: Path | None, scenes_count: int) -> Table:
    scenes = all_scenes()[:: max(1, len(all_scenes()) // scenes_count)][:scenes_count]
    prompts, truths, seeds = [], [], []
    for i, scene in enumerate(scenes):
        rng = random.Random(i)
        for maker in (paraphrase, everyday, paraphrase):
            prompts.append(maker(scene, rng))
            truths.append(scene)
            seeds.append(i)
    extra = {"expand_model": str(language_model)} if language_model else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, flag in (("off", "false"), ("on", "true")):
            values, infos = through_queue(
                Path(tmp) / label,
                model,
                prompts,
                truths,
                steps=25,
                guidance=4.0,
                seeds=seeds,
                canonical_prompts=flag,
                **extra,
            )
            unet = sum((info["cache"] or {}).get("unet_steps", 25) for info in infos)
            hits = sum(bool((info["cache"] or {}).get("exact_hits")) for info in infos)
            mapped = statistics.mean(
                parse_caption(info["expanded_prompt"]) == scene
                for info, scene in zip(infos, truths, strict=True)
            )
            rows.append(
                [
                    label,
                    f"{len(infos)}",
                    f"{hits}",
                    f"{unet}",
                    f"{1 - unet / (25 * len(infos)):.0%}",
                    f"{mapped:.1%}",
                    f"{values['adherence']:.1%}",
                ]
            )
    return Table(
        f"3. Canonical prompts: {len(scenes)} scenes, each asked 3 times in other words "
        "(same seed), 25 steps, 1 image a job",
        [
            "canonical prompts:",
            "jobs",
            "exact hits",
            "UNet steps",
            "saved",
            "right caption",
            "images all three right",
        ],
        rows,
    )


def _packaged_embedder() -> Path:
    folder = packaged_sentence_embedder()
    if folder is None:
        raise SystemExit("the language extra is not installed (pip install imggen[language])")
    return folder


def _real_prompts(path: Path | None) -> list[str]:
    if path is None:
        return REAL_PROMPTS
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()][:20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--language-model", type=Path, default=None)
    parser.add_argument("--prompts", type=Path, default=None, help="PartiPrompts.tsv")
    parser.add_argument("--model", type=Path, default=PRETRAINED)
    parser.add_argument("--scenes", type=int, default=56, help="scenes in table 3")
    parser.add_argument("--only", choices=("mapping", "latency", "canonical"), action="append")
    parser.add_argument("--quick", action="store_true", help="a few scenes of each (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = args.language_model or (get_settings().resolved_models_dir / PACKAGED["smollm2"].name)
    has_lm = (folder / "config.json").is_file()
    language_model = imggen.load_language_model(folder, "cpu") if has_lm else None
    only = set(args.only or ("mapping", "latency", "canonical"))
    print(
        f"# bench.language, {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, language model: {folder if has_lm else 'none'}"
    )
    scenes = all_scenes()[:8] if args.quick else all_scenes()
    if "mapping" in only:
        sources = vocabulary_maps(language_model)
        print_table(mapping_by_source(sources, scenes))
        print_table(held_out_words(sources))
    if "latency" in only:
        print_table(expand_latency(language_model, args.prompts, 8 if args.quick else 40))
    if "canonical" in only:
        count = 2 if args.quick else args.scenes
        print_table(canonical_savings(args.model, folder if has_lm else None, count))


if __name__ == "__main__":
    main()
