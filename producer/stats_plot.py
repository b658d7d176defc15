"""``imggen stats --plot``: the window's curves in one PNG (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a server

import matplotlib.dates as mdates  # noqa: E402 - after the backend is chosen
import matplotlib.pyplot as plt  # noqa: E402

from producer.stats import Stats  # noqa: E402


def draw(found: Stats, path: Path) -> None:
    figure, ((throughput, latency), (depth, failures)) = plt.subplots(
        2, 2, figsize=(12, 8), constrained_layout=True
    )
    figure.suptitle(f"imggen, {found.since:%Y-%m-%d %H:%M} to {found.until:%H:%M} UTC")

    throughput.plot(found.times, found.finished_per_minute, marker=".")
    throughput.set_title("Jobs ended per minute")
    throughput.set_ylim(bottom=0)

    stages = list(found.latency)
    positions = range(len(stages))
    for offset, name in ((-0.2, "p50"), (0.2, "p95")):
        values = [found.latency[stage][name] for stage in stages]
        latency.bar([p + offset for p in positions], values, width=0.4, label=name)
    latency.set_xticks(list(positions), stages)
    latency.set_title("Stage latency (s)")
    latency.legend()

    for stage, counts in found.queue_depth.items():
        depth.plot(found.times, counts, label=stage)
    depth.set_title("Stage runs waiting")
    depth.set_ylim(bottom=0)
    depth.legend()

    reasons = found.failures[:6]
    failures.barh([_short(f["reason"]) for f in reasons], [f["jobs"] for f in reasons])
    failures.set_title("Failure reasons (jobs)")
    failures.invert_yaxis()
    if not reasons:
        failures.set_axis_off()
        failures.text(0.5, 0.5, "no failures", ha="center", transform=failures.transAxes)

    for axes in (throughput, depth):
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _short(reason: str | None, chars: int = 48) -> str:
    text = reason or "(no reason)"
    return text if len(text) <= chars else text[: chars - 1] + "…"
