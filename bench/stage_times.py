"""Time each stage of imggen on the tiny models, in-process (no queue), and print a table.

    python -m bench.stage_times [--jobs 20] [--steps 20] [--size 64]

Every model is built locally with random weights, so the figures say what the machinery costs,
not what a real model costs. Medians over ``--jobs`` text-to-image and image-to-image jobs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

import imggen
from imggen.stages.score import clip_scores, reference_metrics
from imggen.tiny import make_tiny, make_tiny_captioner, make_tiny_clip, make_tiny_expander


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=2, help="images per job")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parts = imggen.load_components(make_tiny(root / "sd"), "cpu")
        expander = imggen.load_language_model(make_tiny_expander(root / "lm"), "cpu")
        captioner = imggen.load_captioner(make_tiny_captioner(root / "cap"), "cpu")
        clip = imggen.load_clip(make_tiny_clip(root / "clip"), "cpu")

    photo = Image.new("RGB", (args.size, args.size), (30, 90, 200))
    size = {"height": args.size, "width": args.size}
    times: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        times[name].append((time.perf_counter() - started) * 1000)

    for job in range(args.jobs):
        seeds = [job * 10 + i for i in range(args.n)]
        with timed("expand (LM, 24 tokens)"):
            prompt = imggen.expand("a red fox", expander, seed=job, max_new_tokens=24).prompt
        with timed("expand (caption)"):
            imggen.caption(captioner, photo)
        with timed("encode (text)"):
            embeddings = imggen.encode_prompt(parts, prompt)
        with timed("encode (image, VAE)"):
            start = imggen.encode_image(parts, photo, **size)
        with timed(f"denoise ({args.steps} steps, n={args.n})"):
            latents = imggen.denoise(parts, embeddings, seeds=seeds, steps=args.steps, **size)
        with timed(f"denoise img2img (strength 0.5, n={args.n})"):
            imggen.denoise(
                parts,
                embeddings,
                seeds=seeds,
                steps=args.steps,
                image_latents=start,
                strength=0.5,
                **size,
            )
        with timed(f"decode (n={args.n})"):
            images = imggen.decode(parts, latents)
        with timed("score (no-reference)"):
            [imggen.score(image) for image in images]
        with timed("score (clip_score)"):
            clip_scores(clip, images, "a red fox")
        with timed("score (mse, psnr, ssim)"):
            [reference_metrics(image, photo) for image in images]

    title = f"Stage times on the tiny models, CPU, {args.size}x{args.size}"
    print(f"{title}, median of {args.jobs} jobs\n")
    print("| stage | median ms | p90 ms |\n|---|---:|---:|")
    for name, values in times.items():
        values = sorted(values[1:] or values)  # the first call warms up
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"| {name} | {statistics.median(values):.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
