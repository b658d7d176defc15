"""``imggen stats``: how the deployment did lately, as tables, JSON or a PNG of plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from producer import stats
from producer.cli import AsJson, _fail, _print_json, out
from producer.db import in_transaction
from producer.settings import get_settings

app = typer.Typer()


@app.command("stats")
def show_stats(
    since: Annotated[
        str, typer.Option(help="Window: 30m, 2h, 1d back from now, or an ISO time.")
    ] = "1h",
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the curves into this PNG (needs imggen[plot]).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Throughput, latency percentiles per stage, queue depth over time and failure reasons."""
    try:
        start = stats.parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    found = in_transaction(get_settings().resolved_database_url, lambda s: stats.gather(s, start))
    if plot is not None:
        try:
            from producer.stats_plot import draw
        except ImportError:
            raise _fail("--plot needs matplotlib: pip install 'imggen[plot]'", code=2) from None
        draw(found, plot)
    if as_json:
        _print_json(found.as_json())
        return
    _print_tables(found)
    if plot is not None:
        out.print(f"plots written to {plot}", highlight=False)


def _print_tables(found: stats.Stats) -> None:
    ended = ", ".join(f"{count} {status}" for status, count in found.jobs.items())
    out.print(
        f"{found.since:%Y-%m-%d %H:%M:%S} to {found.until:%H:%M:%S} UTC: jobs ended: {ended}; "
        f"{found.images} images ({found.images_per_second:.3f}/s)",
        highlight=False,
    )
    latency = Table("stage", "runs", "p50 s", "p95 s", "p99 s", title="Stage latency")
    for stage, row in found.latency.items():
        latency.add_row(stage, *(f"{row[name]:g}" for name in ("runs", "p50", "p95", "p99")))
    out.print(latency)
    peaks = Table("stage", "most waiting", "waiting now", title="Queue depth")
    for stage, depth in found.queue_depth.items():
        peaks.add_row(stage, str(max(depth, default=0)), str(depth[-1] if depth else 0))
    out.print(peaks)
    if found.failures:
        failures = Table("jobs", "reason", title="Failure reasons")
        for failure in found.failures:
            failures.add_row(str(failure["jobs"]), failure["reason"])
        out.print(failures)
