"""The CLI of bulk runs: ``imggen bulk FILE --name NAME``, ``imggen batches``,
``imggen batch ID``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer import batch_rows, batch_steering, batches
from producer.cli import AsJson, _fail, _print_json, err, out
from producer.client import Client
from producer.db import in_transaction, session_scope
from producer.errors import InvalidJobSpec
from producer.models import Batch
from producer.spec import MAX_PRIORITY, SCHEDULERS, parse_size

app = typer.Typer()
BatchId = Annotated[str, typer.Argument(help="The batch id that bulk printed.")]


@app.command()
def bulk(
    file: Annotated[Path, typer.Argument(help="A .txt, .csv, .tsv or .jsonl file of prompts.")],
    name: Annotated[str, typer.Option(help="The batch's name: the same name resumes it.")],
    n: Annotated[int | None, typer.Option("--n", help="Images per prompt.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help=f"Sampler: {', '.join(SCHEDULERS)}.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model id.")] = None,
    priority: Annotated[int, typer.Option(help=f"Within the bulk lane (0-{MAX_PRIORITY}).")] = 0,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Submit the good rows, list the bad ones.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Watch the batch to its end.")
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Submit a file of prompts as one batch (bulk lane); every row is checked first.

    Row fields (columns, JSON keys) override the options.
    """
    defaults: dict[str, Any] = {
        key: value
        for key, value in {
            "n": n,
            "steps": steps,
            "guidance": guidance,
            "scheduler": scheduler,
            "model": model,
            "priority": priority,
        }.items()
        if value is not None
    }
    client = Client()
    try:
        if size is not None:
            defaults["width"], defaults["height"] = parse_size(size)
        rows = batch_rows.read_rows(file)
        done = batches.submit(client, name, rows, defaults=defaults, skip_invalid=skip_invalid)
    except (batch_rows.InvalidRows, InvalidJobSpec) as exc:
        refused = exc.errors if isinstance(exc, batch_rows.InvalidRows) else []
        for line in refused[:50]:
            err.print(f"  {line}", highlight=False)
        raise _fail(f"{exc}; nothing was submitted", code=2) from None
    except OSError as exc:
        raise _fail(f"file: {exc}", code=2) from None
    for bad in done.invalid:
        err.print(f"  skipped {bad}", highlight=False)
    summary = f"batch {done.batch_id} ({name}): {done.submitted} jobs submitted"
    if done.already:
        summary += f", {done.already} rows already in it"
    if done.invalid:
        summary += f", {len(done.invalid)} invalid rows skipped"
    if as_json:
        _print_json(
            {
                "id": done.batch_id,
                "name": name,
                "submitted": done.submitted,
                "already": done.already,
                "invalid": [str(bad) for bad in done.invalid],
            }
        )
    else:
        out.print(summary, highlight=False)
    if wait:
        _watch(client, done.batch_id, quiet=as_json)


@app.command("batches")
def list_batches(as_json: AsJson = False) -> None:
    """The batches, newest first, with their counts."""
    client = Client()

    def read(session: Any) -> list[dict[str, Any]]:
        rows = session.query(Batch).order_by(Batch.created_at.desc()).limit(100).all()
        return [batch_steering.summary(session, batch) for batch in rows]

    found = in_transaction(client.settings.resolved_database_url, read)
    if as_json:
        _print_json(found)
        return
    table = Table("id", "name", "status", "jobs", "succeeded", "failed", "queued", "running")
    for batch in found:
        counts = batch["counts"]
        table.add_row(
            batch["id"],
            batch["name"],
            batch["status"],
            str(batch["jobs"]),
            str(counts["succeeded"]),
            str(counts["failed"]),
            str(counts["queued"]),
            str(counts["running"]),
        )
    out.print(table)


@app.command("batch")
def show_batch(
    batch_id: BatchId,
    pause: Annotated[bool, typer.Option("--pause", help="Claim nothing more of it.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Go on after --pause.")] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel every job not ended.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Queue the failed jobs again.")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Follow it to its end.")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a batch (counts, images/s, ETA), or steer it."""
    client = Client()
    asked = {"pause": pause, "resume": resume, "cancel": cancel, "retry-failed": retry_failed}
    actions = [action for action, on in asked.items() if on]
    if len(actions) > 1:
        raise _fail("give one of --pause, --resume, --cancel, --retry-failed", code=2)
    with session_scope(client.settings.resolved_database_url) as session:
        batch = batch_steering.find(session, batch_id)
        if batch is None:
            raise _fail(f"no batch with id {batch_id!r}")
        if actions:
            steer = {
                "pause": batch_steering.pause,
                "resume": batch_steering.resume,
                "cancel": batch_steering.cancel,
                "retry-failed": batch_steering.retry_failed,
            }[actions[0]]
            changed = steer(session, batch)
            if isinstance(changed, int) and not as_json:
                err.print(f"{actions[0]}: {changed} jobs", highlight=False)
        view = batch_steering.summary(session, batch)
    if actions and actions[0] in ("resume", "retry-failed"):
        _relay(client)
    if as_json:
        _print_json(view)
    else:
        _print_summary(view)
    if watch:
        _watch(client, batch_id, quiet=as_json)


def _relay(client: Client) -> None:
    """Send the messages a resume or retry wrote (the workers' relay would, a beat later)."""
    from producer.outbox import publish_pending
    from producer.queue import producer_app

    with contextlib.suppress(Exception):  # the broker is down: the relay sends them
        publish_pending(client.settings.resolved_database_url, producer_app(client.settings))


def _print_summary(view: dict[str, Any]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in view["counts"].items() if v)
    eta = f", ETA {view['eta_seconds']:.0f} s" if view["eta_seconds"] else ""
    out.print(
        f"[bold]{view['id']}[/bold] {view['name']} ({view['status']}): {view['jobs']} jobs; "
        f"{counts or 'none yet'}; {view['images_per_s']:.2f} images/s{eta}",
        highlight=False,
    )


def _watch(client: Client, batch_id: str, *, quiet: bool) -> None:
    """A live bar until every job of the batch has ended; Ctrl-C stops watching, not the batch."""

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True, disable=quiet) as progress:
            bar = progress.add_task(f"batch {batch_id[:8]}", total=None, detail="")

            def show(view: dict[str, Any]) -> None:
                counts = view["counts"]
                eta = f", ETA {view['eta_seconds']:.0f} s" if view["eta_seconds"] else ""
                detail = (
                    f"failed {counts['failed']}, queued {counts['queued']}, "
                    f"{view['images_per_s']:.2f} images/s{eta}"
                )
                progress.update(bar, completed=view["done"], total=view["jobs"], detail=detail)

            view = client.wait_batch(batch_id, on_progress=show)
    except KeyboardInterrupt:
        err.print("stopped watching; the batch goes on", highlight=False)
        raise typer.Exit(130) from None
    if not quiet:
        _print_summary(view)


@app.command("export")
def export(
    batch_id: BatchId,
    folder: Annotated[Path, typer.Argument(help="Where to write the images, CSV and gallery.")],
) -> None:
    """Write a batch's kept images, jobs.csv (each job, with its images' metrics) and an
    index.html gallery that opens from disk (sort and filter by any metric)."""
    from producer.export import export_batch

    client = Client()
    with session_scope(client.settings.resolved_database_url) as session:
        batch = batch_steering.find(session, batch_id)
        if batch is None:
            raise _fail(f"no batch with id {batch_id!r}")
        done = export_batch(session, batch, client.store, folder)
    out.print(
        f"{done.images} images of {done.jobs} jobs written to {done.folder}; "
        f"open {done.folder / 'index.html'}",
        highlight=False,
    )
