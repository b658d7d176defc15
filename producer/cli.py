"""The producer half of the ``imggen`` CLI: submit, status, wait, cancel, metrics.

``worker.cli`` builds the whole CLI from this app and the worker side's commands (worker,
demo, models, db).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.client import Client, JobHandle
from producer.errors import ImggenError, InvalidJobSpec, JobNotFound, JobTimeout
from producer.models import JobStatus
from producer.spec import LANES, MAX_PRIORITY, SCHEDULERS, parse_lora, parse_size

app = typer.Typer(help="imggen: image generation as background jobs.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

JobId = Annotated[str, typer.Argument(help="The job id that submit printed.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _exit_code(info: dict[str, Any]) -> int:
    return 0 if info["status"] == JobStatus.SUCCEEDED.value else 1


@app.command()
def submit(
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw (may be left out with --image).")
    ] = None,
    negative: Annotated[str, typer.Option(help="What to steer away from.")] = "",
    n: Annotated[int, typer.Option("--n", help="Images to draw (seeds seed, seed+1, …).")] = 1,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the first image; random if unset.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    size: Annotated[
        str | None,
        typer.Option(help="WIDTHxHEIGHT, multiples of 8; default 512x512, or the model's own."),
    ] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 7.5,
    scheduler: Annotated[
        str | None,
        typer.Option(help=f"Sampler: {', '.join(SCHEDULERS)}; the model's own if unset."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model id; the deployment's default if unset.")
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(help="A LoRA adapter as NAME or NAME:WEIGHT (weight 1); repeatable."),
    ] = None,
    expand: Annotated[
        bool,
        typer.Option("--expand/--no-expand", help="Let the language model rewrite the prompt."),
    ] = False,
    image: Annotated[
        Path | None, typer.Option(help="Input image (PNG, JPEG, WebP): image-to-image.")
    ] = None,
    strength: Annotated[
        float, typer.Option(help="Image-to-image: how far to move from the input, (0, 1].")
    ] = 0.75,
    keep_best: Annotated[
        int | None, typer.Option(help="Keep only the best K of the --n images.")
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="The metric --keep-best ranks by.")
    ] = "clip_score",
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Allow the exact and semantic caches.")
    ] = True,
    lane: Annotated[
        str, typer.Option(help=f"{' or '.join(LANES)}: interactive work is taken first.")
    ] = "interactive",
    priority: Annotated[
        int, typer.Option(help=f"Within the lane, higher first (0-{MAX_PRIORITY}).")
    ] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Submit one job; prints its id (or, with --wait, the finished job)."""
    fields: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "n": n,
        "steps": steps,
        "guidance": guidance,
        "scheduler": scheduler,
        "model": model,
        "expand": expand,
        "keep_best": keep_best,
        "rank_by": by,
        "cache": cache,
        "lane": lane,
        "priority": priority,
    }
    if image is not None:
        fields["strength"] = strength
    if seed is not None:
        fields["seed"] = seed
    try:
        if lora:
            fields["loras"] = [parse_lora(text) for text in lora]
        if size is not None:
            fields["width"], fields["height"] = parse_size(size)
        handle = Client().submit(image=image, **fields)
    except InvalidJobSpec as exc:
        raise _fail(str(exc), code=2) from None
    if not wait:
        if as_json:
            _print_json({"id": handle.id, "status": JobStatus.QUEUED.value})
        else:
            out.print(handle.id, highlight=False)
        return
    info = _follow(handle, timeout, show_progress=not as_json)
    _print_json(info) if as_json else _print_summary(info)
    raise typer.Exit(_exit_code(info))


@app.command()
def status(job_id: JobId, as_json: AsJson = False) -> None:
    """Show a job: status, stage, progress, stages, images."""
    info = _info(job_id)
    _print_json(info) if as_json else _print_summary(info)


@app.command("wait")
def wait_command(
    job_id: JobId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    as_json: AsJson = False,
) -> None:
    """Follow a job to its end with a progress display (stage and denoising step)."""
    _info(job_id)  # a clear error for an unknown id before the display starts
    info = _follow(Client().job(job_id), timeout, show_progress=not as_json)
    _print_json(info) if as_json else _print_summary(info)
    raise typer.Exit(_exit_code(info))


@app.command()
def cancel(job_id: JobId) -> None:
    """Cancel a job: a queued one never starts, a running one stops at its next step."""
    try:
        canceled = Client().cancel(job_id)
    except JobNotFound as exc:
        raise _fail(str(exc)) from None
    out.print("canceled" if canceled else "already ended", highlight=False)


@app.command()
def metrics(job_id: JobId, as_json: AsJson = False) -> None:
    """The quality metrics of each image of a job."""
    info = _info(job_id)
    notes = _notes(info)
    if as_json:
        keys = ("index", "uri", "discarded", "metrics")
        images = [{key: image[key] for key in keys} for image in info["images"]]
        _print_json({"id": info["id"], "images": images, "notes": notes})
        return
    names = sorted({name for image in info["images"] for name in image["metrics"]})
    table = Table("image", "kept", *names)
    for image in info["images"]:
        values = [f"{image['metrics'][n]:.4g}" if n in image["metrics"] else "" for n in names]
        table.add_row(str(image["index"]), "no" if image["discarded"] else "yes", *values)
    out.print(table)
    for note in notes:
        out.print(f"note: {note}", highlight=False)


def _notes(info: dict[str, Any]) -> list[str]:
    """What the stages skipped, and why (a metric whose model is not configured, …)."""
    return [note for stage in info["stages"] for note in stage["notes"]]


def _info(job_id: str) -> dict[str, Any]:
    try:
        return Client().view(job_id)
    except JobNotFound as exc:
        raise _fail(str(exc)) from None


def _follow(handle: JobHandle, timeout: float | None, *, show_progress: bool) -> dict[str, Any]:
    try:
        if not show_progress:
            return handle.wait(timeout=timeout)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as progress:
            bar = progress.add_task(f"job {handle.id[:8]}", total=None)

            def show(info: dict[str, Any]) -> None:
                step, description = info["progress"], f"{info['status']} {info['stage'] or ''}"
                place = info.get("queue")
                if place is not None:  # waiting at its stage: where, and until about when
                    eta = place["eta_seconds"]
                    description += f", #{place['position'] + 1} in line"
                    description += f", ETA {eta:.0f} s" if eta is not None else ""
                progress.update(
                    bar,
                    description=f"job {handle.id[:8]} {description}",
                    completed=step["step"] or 0,
                    total=step["total"],
                )

            return handle.wait(timeout=timeout, on_progress=show)
    except JobTimeout as exc:
        raise _fail(str(exc)) from None
    except ImggenError as exc:
        raise _fail(str(exc)) from None


def _print_summary(info: dict[str, Any]) -> None:
    out.print(f"[bold]{info['id']}[/bold] {info['status']}", highlight=False)
    lines = {
        "prompt": info["prompt"],
        "input image": info["input_image"],
        "caption": info["caption"],
        "expanded": info["expanded_prompt"],
        "error": info["error"],
    }
    for label, value in lines.items():
        if value:
            out.print(f"  {label}: {value}", highlight=False)
    table = Table("stage", "status", "attempts", "seconds", "error")
    for stage in info["stages"]:
        seconds = f"{stage['duration_s']:.3f}" if stage["duration_s"] is not None else ""
        table.add_row(
            stage["stage"], stage["status"], str(stage["attempts"]), seconds, stage["error"] or ""
        )
    out.print(table)
    for note in _notes(info):
        out.print(f"  note: {note}", highlight=False)
    for image in info["images"]:
        scores = ", ".join(f"{k}={v:.3g}" for k, v in image["metrics"].items())
        discarded = " (discarded)" if image["discarded"] else ""
        out.print(f"  image {image['index']}{discarded}: {image['uri']}  {scores}", highlight=False)
