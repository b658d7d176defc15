"""``imggen demo``: a handful of jobs end to end, with a worker started for the occasion.

What it shows (``DEMO_PROMPTS``) lives with the shapes world; the running of it lives here,
since imggen itself knows nothing of queues and workers.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from imggen.shapes.world import DEMO_PROMPTS
from producer.client import Client, JobHandle
from producer.models import TERMINAL
from producer.settings import get_settings
from producer.spec import parse_size
from worker.process import start_worker, stop_worker

_TERMINAL = {status.value for status in TERMINAL}


def read_prompts(path: Path | None, count: int) -> list[str]:
    """Prompts from a text file (one a line) or a TSV with a header (first column)."""
    if path is None:
        return (DEMO_PROMPTS * (count // len(DEMO_PROMPTS) + 1))[:count]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".tsv":
        lines = [line.split("\t")[0] for line in lines[1:]]
    return lines[:count]


def run_demo(
    output: Path,
    *,
    prompts_file: Path | None,
    count: int,
    n: int,
    steps: int,
    size: str,
    guidance: float,
    timeout: float,
) -> dict[str, Any]:
    console = Console()
    settings = get_settings()
    started = time.monotonic()

    # 1. The schema (a no-op when there). The model is the configured one, by default the
    # shapes model that ships with imggen.
    from migrations import upgrade

    upgrade(settings.resolved_database_url)

    # 2. A worker, then the jobs.
    console.print(
        f"database {settings.resolved_database_url}, broker {settings.resolved_broker_url}"
    )
    output.mkdir(parents=True, exist_ok=True)
    log = (output / "worker.log").open("wb")
    process = start_worker(log=log, loglevel="WARNING", hostname="imggen-demo@%h")
    try:
        width, height = parse_size(size)
        client = Client(settings)
        handles = [
            client.submit(
                prompt,
                n=n,
                steps=steps,
                width=width,
                height=height,
                guidance=guidance,
                seed=1000 + 10 * i,
            )
            for i, prompt in enumerate(read_prompts(prompts_file, count))
        ]
        infos = _watch(console, handles, timeout)
    finally:
        stop_worker(process)
        log.close()

    # 3. Images and a summary in the output folder.
    summary = _write_output(output, infos, wall_s=time.monotonic() - started)
    console.print(_summary_table(summary))
    for line in _drawn_as(summary):
        console.print(line, highlight=False)
    console.print(f"images, summary.json and worker.log in {output}", highlight=False)
    return summary


def _watch(console: Console, handles: list[JobHandle], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            infos = [handle.info() for handle in handles]
            live.update(_progress_table(infos))
            if all(info["status"] in _TERMINAL for info in infos) or time.monotonic() > deadline:
                return infos
            time.sleep(0.25)


def _progress_table(infos: list[dict[str, Any]]) -> Table:
    table = Table("job", "prompt", "status", "stage", "step")
    for info in infos:
        progress = info["progress"]
        step = f"{progress['step']}/{progress['total']}" if progress["total"] else ""
        table.add_row(
            info["id"][:8], info["prompt"][:40], info["status"], info["stage"] or "", step
        )
    return table


def _write_output(output: Path, infos: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    images_dir = output / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for info in infos:
        images = []
        for image in info["images"]:
            target = images_dir / f"{info['id'][:8]}-{image['index']}.png"
            shutil.copyfile(image["uri"], target)
            images.append({"file": str(target), "seed": image["seed"], "metrics": image["metrics"]})
        jobs.append(
            {
                "id": info["id"],
                "prompt": info["prompt"],
                "drawn": info["expanded_prompt"],
                "expansion": info["expansion"],
                "status": info["status"],
                "error": info["error"],
                "stage_seconds": {s["stage"]: s["duration_s"] for s in info["stages"]},
                "images": images,
            }
        )
    summary = {"wall_s": round(wall_s, 3), "jobs": jobs}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _drawn_as(summary: dict[str, Any]) -> list[str]:
    """What each prompt was drawn as, and what mapped it onto the model's words."""
    lines = []
    for job in summary["jobs"]:
        line = f"{job['id'][:8]}  {job['prompt']}"
        expansion = job["expansion"] or {}
        if job["drawn"] and job["drawn"] != job["prompt"]:
            by = [
                expansion["expander"] if source == "language model" else source
                for source in expansion.get("mapped_by", [])
            ]
            line += f"  →  {job['drawn']}" + (f"  (mapped by {', '.join(by)})" if by else "")
        lines.append(line)
    return lines


def _summary_table(summary: dict[str, Any]) -> Table:
    stages = list(summary["jobs"][0]["stage_seconds"]) if summary["jobs"] else []
    table = Table(
        "job",
        "status",
        *(f"{s} s" for s in stages),
        "adherence",  # share of the job's images that show what was asked (shapes model)
        title=f"imggen demo: {len(summary['jobs'])} jobs in {summary['wall_s']:.1f} s",
    )
    for job in summary["jobs"]:
        seconds = [
            f"{job['stage_seconds'][s]:.2f}" if job["stage_seconds"][s] else "" for s in stages
        ]
        scores = [image["metrics"].get("adherence") for image in job["images"]]
        known = [score for score in scores if score is not None]
        adherence = f"{sum(known) / len(known):.2f}" if known else ""
        table.add_row(job["id"][:8], job["status"], *seconds, adherence)
    return table
