"""``imggen export BATCH DIR``: a batch's kept images, a CSV of its jobs and their metrics, and
one ``index.html`` gallery that opens from disk with no server (no CDN, no build step).

The gallery holds its data as JSON in the page. It sorts and filters by any metric, shows each
image's prompt and metrics on hover, and reads its starting sort and filter from the address's
fragment (``index.html#sort=sharpness&order=desc&min=0.5``), so a link can share a view.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from producer.artifacts import ArtifactStore
from producer.models import Batch, Image, Job


@dataclass
class Exported:
    images: int
    jobs: int
    folder: Path


def export_batch(session: Session, batch: Batch, store: ArtifactStore, folder: Path) -> Exported:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    jobs = session.scalars(
        select(Job)
        .where(Job.batch_id == batch.id)
        .order_by(Job.batch_row)
        .options(selectinload(Job.images).selectinload(Image.metrics))
    ).all()
    cards: list[dict[str, Any]] = []
    metric_names: set[str] = set()
    rows = []
    for job in jobs:
        kept = [image for image in job.images if not image.discarded]
        for image in kept:
            name = f"images/{job.batch_row:06d}-{image.index}.png"
            (folder / name).write_bytes(store.get(image.uri))
            metrics = {metric.name: metric.value for metric in image.metrics}
            metric_names |= metrics.keys()
            cards.append(
                {"file": name, "row": job.batch_row, "prompt": job.prompt or "", "metrics": metrics}
            )
        rows.append((job, kept))
    names = sorted(metric_names)
    with (folder / "jobs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "job", "status", "prompt", "seed", "image", *names])
        for job, kept in rows:
            if not kept:
                writer.writerow([job.batch_row, job.id, job.status, job.prompt, job.seed, ""])
            for image in kept:
                metrics = {metric.name: metric.value for metric in image.metrics}
                writer.writerow(
                    [job.batch_row, job.id, job.status, job.prompt, image.seed]
                    + [f"images/{job.batch_row:06d}-{image.index}.png"]
                    + [metrics.get(name, "") for name in names]
                )
    page = _PAGE.replace("{{title}}", html.escape(batch.name)).replace(
        "{{data}}", json.dumps({"metrics": names, "cards": cards}).replace("</", "<\\/")
    )
    (folder / "index.html").write_text(page, encoding="utf-8")
    return Exported(len(cards), len(jobs), folder)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}: imggen batch</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1rem; background: #fafafa; }
  header { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, 136px); gap: 8px;
          margin-top: 1rem; }
  figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 4px; }
  figure img { width: 128px; height: 128px; object-fit: contain; image-rendering: pixelated;
               display: block; }
  figcaption { font-size: 11px; color: #555; white-space: nowrap; overflow: hidden;
               text-overflow: ellipsis; }
</style>
</head>
<body>
<header>
  <h1>{{title}}</h1>
  <label>sort by <select id="sort"><option value="row">row</option></select></label>
  <label><select id="order"><option value="asc">ascending</option>
    <option value="desc">descending</option></select></label>
  <label>at least <input id="min" type="number" step="any" placeholder="any"></label>
  <span id="count"></span>
</header>
<main id="grid"></main>
<script id="data" type="application/json">{{data}}</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
const sort = document.getElementById("sort"), order = document.getElementById("order");
const min = document.getElementById("min"), grid = document.getElementById("grid");
for (const name of data.metrics) sort.add(new Option(name, name));
const value = (card, key) => key === "row" ? card.row : card.metrics[key];
function fromFragment() {
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.has("sort")) sort.value = wanted.get("sort");
  if (wanted.has("order")) order.value = wanted.get("order");
  if (wanted.has("min")) min.value = wanted.get("min");
}
function render() {
  const key = sort.value, sign = order.value === "desc" ? -1 : 1;
  const floor = min.value === "" ? null : Number(min.value);
  const shown = data.cards
    .filter(card => floor === null || key === "row" || (value(card, key) ?? -Infinity) >= floor)
    .sort((a, b) => sign * ((value(a, key) ?? -Infinity) - (value(b, key) ?? -Infinity))
                    || a.row - b.row || a.file.localeCompare(b.file));
  grid.replaceChildren(...shown.map(card => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = card.file;
    image.alt = card.prompt;
    image.addEventListener("load", () => image.dataset.loaded = "1");
    const lines = Object.entries(card.metrics).map(([k, v]) => `${k}: ${v.toFixed(4)}`);
    figure.title = [card.prompt, ...lines].join("\\n");
    figure.dataset.file = card.file;
    const caption = document.createElement("figcaption");
    caption.textContent = key === "row" ? card.prompt : `${key} ${value(card, key)?.toFixed(3)}`;
    figure.append(image, caption);
    return figure;
  }));
  document.getElementById("count").textContent = `${shown.length} of ${data.cards.length}`;
}
for (const input of [sort, order, min]) input.addEventListener("input", render);
window.addEventListener("hashchange", () => { fromFragment(); render(); });
fromFragment();
render();
</script>
</body>
</html>
"""
